"""HF <-> Megatron conversion: one declarative mapping table per model family."""

from megatron_lang.conversion.convert import (
    ConversionReport,
    hf_to_megatron,
    megatron_to_hf,
)
from megatron_lang.conversion.families import FAMILIES, Family, from_hf_config
from megatron_lang.conversion.mapping import ConversionError, Rule
from megatron_lang.conversion.verify import VerifyReport, verify_conversion
from megatron_lang.conversion.vocab import EmbeddingInit, NewTokenContext, register_init

__all__ = [
    "FAMILIES",
    "ConversionError",
    "ConversionReport",
    "EmbeddingInit",
    "Family",
    "NewTokenContext",
    "Rule",
    "VerifyReport",
    "from_hf_config",
    "hf_to_megatron",
    "megatron_to_hf",
    "register_init",
    "verify_conversion",
]
