"""HF <-> Megatron conversion: one declarative mapping table per model family."""

import torch.utils._device as _torch_device

# Work-around: megatron_lang.platform.cpu_support wraps torch factory functions
# (torch.tensor ...).  torch caches the set of factory functions that a
# ``with torch.device(...)`` context redirects on first use; if that happens
# after the wrapping, the cache holds the wrappers and the context stops
# applying to the real functions, which makes transformers' ``from_pretrained``
# leave non-persistent buffers (RoPE inv_freq) uninitialised.  Filling the
# cache now, before any wrapping, keeps it correct.
_torch_device._device_constructors()

from megatron_lang.conversion.convert import (  # noqa: E402
    ConversionReport,
    hf_to_megatron,
    megatron_to_hf,
)
from megatron_lang.conversion.families import FAMILIES, Family, from_hf_config  # noqa: E402
from megatron_lang.conversion.mapping import ConversionError, Rule  # noqa: E402
from megatron_lang.conversion.verify import VerifyReport, verify_conversion  # noqa: E402
from megatron_lang.conversion.vocab import EmbeddingInit, NewTokenContext, register_init  # noqa: E402

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
