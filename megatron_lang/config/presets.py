"""Named model shapes: the real Llama-family models and a tiny debug preset per family.

Real shapes are for dry runs, FLOP counts and from-scratch experiments; actual
continued pretraining starts from a converted checkpoint (``model.checkpoint``),
whose saved architecture wins over any preset.
"""

from __future__ import annotations

from dataclasses import replace

from megatron_lang.models.arch import LlamaArch

_PRESETS: dict[str, LlamaArch] = {
    "llama2-7b": LlamaArch(32, 4096, 32, 32, 11008, 32000, 4096, family="llama"),
    "llama3-8b": LlamaArch(
        32,
        4096,
        32,
        8,
        14336,
        128256,
        8192,
        rotary_base=500000.0,
        family="llama",
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    "mistral-7b": LlamaArch(
        32, 4096, 32, 8, 14336, 32768, 32768, rotary_base=1000000.0, family="mistral"
    ),
    "mistral-nemo-12b": LlamaArch(
        40,
        5120,
        32,
        8,
        14336,
        131072,
        131072,
        kv_channels=128,
        rotary_base=1000000.0,
        family="mistral",
    ),
    "smollm2-135m": LlamaArch(
        30,
        576,
        9,
        3,
        1536,
        49152,
        8192,
        rotary_base=100000.0,
        tie_word_embeddings=True,
        family="llama",
    ),
    # tiny debug presets (tests, CPU quickstart): same features as their family
    "tiny-llama": LlamaArch(2, 64, 4, 2, 128, 512, 512, family="llama"),
    "tiny-llama3": LlamaArch(2, 64, 4, 2, 128, 512, 512, rotary_base=500000.0, family="llama"),
    "tiny-mistral": LlamaArch(2, 64, 4, 2, 128, 512, 512, sliding_window=64, family="mistral"),
    "tiny-nemo": LlamaArch(2, 64, 4, 2, 128, 512, 512, kv_channels=32, family="mistral"),
    "tiny-smollm2": LlamaArch(4, 48, 3, 1, 128, 512, 512, tie_word_embeddings=True, family="llama"),
}


def preset_names() -> list[str]:
    """All preset names."""
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> LlamaArch:
    """A copy of preset ``name`` with field overrides.

    Raises:
        KeyError: unknown preset (the message lists the known ones).
    """
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(preset_names())}")
    unknown = set(overrides) - set(LlamaArch.__dataclass_fields__)
    if unknown:
        raise KeyError(f"unknown model.arch keys {sorted(unknown)}")
    return replace(_PRESETS[name], **overrides)
