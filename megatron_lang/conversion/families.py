"""Model families: their mapping tables and ``from_hf_config``.

* ``llama``: Llama-2, Llama-3/3.1 (RoPE ``llama3`` scaling), SmolLM2 (tied embeddings).
* ``mistral``: Mistral-7B v0.1 (sliding window) and v0.3, Mistral-Nemo (head_dim 128).
* ``qwen2``: Qwen2/2.5 (biases on Q/K/V; same table plus one rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from megatron_lang.conversion.mapping import GATE_UP, QKV, ConversionError, Rule
from megatron_lang.models.arch import LlamaArch

L = "model.layers.{layer}."
M = "decoder.layers.{layer}."


def _untied(a: LlamaArch) -> bool:
    return not a.tie_word_embeddings


LLAMA_RULES: tuple[Rule, ...] = (
    Rule(
        "embedding.word_embeddings.weight", ("model.embed_tokens.weight",), (("vocab", "hidden"),)
    ),
    Rule(M + "input_layernorm.weight", (L + "input_layernorm.weight",), (("hidden",),)),
    Rule(
        M + "self_attention.linear_qkv.weight",
        (
            L + "self_attn.q_proj.weight",
            L + "self_attn.k_proj.weight",
            L + "self_attn.v_proj.weight",
        ),
        (("q", "hidden"), ("kv", "hidden"), ("kv", "hidden")),
        QKV,
    ),
    Rule(
        M + "self_attention.linear_proj.weight",
        (L + "self_attn.o_proj.weight",),
        (("hidden", "q"),),
    ),
    Rule(M + "pre_mlp_layernorm.weight", (L + "post_attention_layernorm.weight",), (("hidden",),)),
    Rule(
        M + "mlp.linear_fc1.weight",
        (L + "mlp.gate_proj.weight", L + "mlp.up_proj.weight"),
        (("ffn", "hidden"), ("ffn", "hidden")),
        GATE_UP,
    ),
    Rule(M + "mlp.linear_fc2.weight", (L + "mlp.down_proj.weight",), (("hidden", "ffn"),)),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",), (("hidden",),)),
    Rule("output_layer.weight", ("lm_head.weight",), (("vocab", "hidden"),), when=_untied),
)
"""Llama: HF ``LlamaForCausalLM`` names."""

MISTRAL_RULES: tuple[Rule, ...] = LLAMA_RULES
"""Mistral uses the same HF tensor names as Llama."""

QWEN2_RULES: tuple[Rule, ...] = LLAMA_RULES + (
    Rule(
        M + "self_attention.linear_qkv.bias",
        (L + "self_attn.q_proj.bias", L + "self_attn.k_proj.bias", L + "self_attn.v_proj.bias"),
        (("q",), ("kv",), ("kv",)),
        QKV,
    ),
)
"""Qwen2: Llama plus biases on Q/K/V (fused like the weights)."""

# megatron-core's llama3 RoPE scaling has these constants built in
# (RotaryEmbedding._apply_scaling); only ``factor`` is configurable.
MEGATRON_LLAMA3_ROPE = {
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default)


def rope_parameters(cfg: Any) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling or None) from a transformers 4.x or 5.x config."""
    params = dict(_get(cfg, "rope_parameters", None) or {})
    theta = params.pop("rope_theta", None) or _get(cfg, "rope_theta", None) or 10000.0
    scaling = params or dict(_get(cfg, "rope_scaling", None) or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in (None, "default"):
        return float(theta), None
    if rope_type != "llama3":
        raise ConversionError(
            f"unsupported rope scaling type {rope_type!r} (supported: default, llama3)"
        )
    for key, expected in MEGATRON_LLAMA3_ROPE.items():
        found = scaling.get(key, expected)
        if float(found) != float(expected):
            raise ConversionError(
                f"rope_scaling {key}={found} differs from megatron-core's built-in llama3 "
                f"value {expected}; this model's RoPE cannot be reproduced"
            )
    return float(theta), scaling


def _common(cfg: Any, family: str) -> dict[str, Any]:
    act = _get(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ConversionError(f"unsupported hidden_act {act!r} for {family} (expected 'silu')")
    if _get(cfg, "mlp_bias", False):
        raise ConversionError(f"unsupported option mlp_bias=True for {family}")
    theta, scaling = rope_parameters(cfg)
    heads = cfg.num_attention_heads
    groups = _get(cfg, "num_key_value_heads", None) or heads
    if heads % groups:
        raise ConversionError(
            f"num_attention_heads {heads} not divisible by num_key_value_heads {groups}"
        )
    head_dim = _get(cfg, "head_dim", None)
    default_head_dim = cfg.hidden_size // heads
    return dict(
        num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=heads,
        num_query_groups=groups,
        ffn_hidden_size=cfg.intermediate_size,
        vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position_embeddings,
        kv_channels=head_dim if head_dim and head_dim != default_head_dim else None,
        rotary_base=theta,
        rope_scaling=scaling,
        norm_epsilon=float(cfg.rms_norm_eps),
        tie_word_embeddings=bool(_get(cfg, "tie_word_embeddings", False)),
        family=family,
    )


def llama_from_hf_config(cfg: Any) -> LlamaArch:
    """LlamaArch for an HF ``LlamaConfig`` (Llama-2/3/3.1, SmolLM2)."""
    if _get(cfg, "attention_bias", False):
        raise ConversionError("unsupported option attention_bias=True for llama (o_proj bias)")
    return LlamaArch(**_common(cfg, "llama"))


def mistral_from_hf_config(cfg: Any) -> LlamaArch:
    """LlamaArch for an HF ``MistralConfig`` (v0.1 sliding window, v0.3, Nemo)."""
    kw = _common(cfg, "mistral")
    window = _get(cfg, "sliding_window", None)
    return LlamaArch(**kw, sliding_window=int(window) if window else None)


def qwen2_from_hf_config(cfg: Any) -> LlamaArch:
    """LlamaArch for an HF ``Qwen2Config`` (Q/K/V biases, no sliding window)."""
    if _get(cfg, "use_sliding_window", False):
        raise ConversionError("unsupported option use_sliding_window=True for qwen2")
    return LlamaArch(**_common(cfg, "qwen2"), qkv_bias=True)


@dataclass(frozen=True)
class Family:
    """A model family: HF identifiers, mapping table, config reader."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    rules: tuple[Rule, ...]
    from_hf_config: Callable[[Any], LlamaArch]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", ("llama",), ("LlamaForCausalLM",), LLAMA_RULES, llama_from_hf_config),
        Family(
            "mistral", ("mistral",), ("MistralForCausalLM",), MISTRAL_RULES, mistral_from_hf_config
        ),
        Family("qwen2", ("qwen2",), ("Qwen2ForCausalLM",), QWEN2_RULES, qwen2_from_hf_config),
    )
}


def family_for_hf_config(cfg: Any) -> Family:
    """The family of an HF config, from its ``model_type`` / ``architectures``.

    Raises:
        ConversionError: unsupported architecture.
    """
    archs = tuple(_get(cfg, "architectures", None) or ())
    model_type = _get(cfg, "model_type", None)
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            bad = [a for a in archs if a not in fam.architectures]
            if bad:
                raise ConversionError(
                    f"unsupported architecture {bad[0]!r} (model_type {model_type!r}); "
                    f"supported: {', '.join(fam.architectures)}"
                )
            return fam
    supported = sorted(a for f in FAMILIES.values() for a in f.architectures)
    raise ConversionError(
        f"unsupported architecture {archs[0] if archs else model_type!r} "
        f"(model_type {model_type!r}); supported: {', '.join(supported)}"
    )


def from_hf_config(cfg: Any) -> LlamaArch:
    """LlamaArch for any supported HF config (dispatches on the family)."""
    return family_for_hf_config(cfg).from_hf_config(cfg)
