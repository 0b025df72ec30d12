"""Llama-family architecture description and its megatron-core TransformerConfig.

:class:`LlamaArch` holds what differs between Llama-2/3, Mistral, Mistral-Nemo
and SmolLM2 (sizes, GQA, RoPE, tied embeddings, head_dim); :func:`to_transformer_config`
turns it into megatron-core's ``TransformerConfig`` rather than re-declaring its options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from megatron_lang.platform import cpu_support


@dataclass
class LlamaArch:
    """Shape of a Llama-family decoder (RMSNorm, SwiGLU, RoPE, GQA, no biases)."""

    num_layers: int
    """Transformer layers."""
    hidden_size: int
    """Model width."""
    num_attention_heads: int
    """Query heads."""
    num_query_groups: int
    """KV heads (GQA groups); equal to num_attention_heads for MHA."""
    ffn_hidden_size: int
    """SwiGLU inner width (HF ``intermediate_size``)."""
    vocab_size: int
    """Tokenizer vocabulary size (unpadded)."""
    max_position_embeddings: int = 4096
    """Longest sequence the RoPE tables are built for."""
    kv_channels: int | None = None
    """Head dim; None means hidden_size / num_attention_heads (Mistral-Nemo sets 128)."""
    rotary_base: float = 10000.0
    """RoPE theta (Llama-3: 500000)."""
    rope_scaling: dict[str, Any] | None = None
    """HF ``rope_scaling`` (e.g. type llama3 with factor, low/high freq factors)."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon."""
    tie_word_embeddings: bool = False
    """Share the input embedding and the LM head (SmolLM2)."""
    qkv_bias: bool = False
    """Biases on Q/K/V projections (Qwen2-style)."""
    sliding_window: int | None = None
    """Mistral-7B v0.1 sliding-window attention size (None = full causal)."""
    family: str = "llama"
    """Family name, selects the conversion mapping table."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Family-specific values kept for the round trip back to HF."""

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, saved with checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaArch:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LlamaArch keys: {sorted(unknown)}")
        return cls(**d)


def padded_vocab_size(vocab_size: int, divisor: int = 128, tensor_parallel: int = 1) -> int:
    """Vocabulary padded up to a multiple of ``divisor * tensor_parallel``."""
    multiple = divisor * tensor_parallel
    return ((vocab_size + multiple - 1) // multiple) * multiple


def to_transformer_config(
    arch: LlamaArch,
    params_dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Any:
    """megatron-core ``TransformerConfig`` for ``arch``.

    ``overrides`` are passed to ``TransformerConfig`` (parallel sizes,
    recomputation, FP8 ...), so every megatron-core option stays available.
    """
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    kwargs: dict[str, Any] = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        ffn_hidden_size=arch.ffn_hidden_size,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        apply_rope_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        bias_activation_fusion=False,
    )
    if arch.sliding_window:
        kwargs["window_size"] = (arch.sliding_window - 1, 0)
    kwargs.update(cpu_support.transformer_config_defaults())
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def tiny_llama(vocab_size: int = 128, tie_word_embeddings: bool = False) -> LlamaArch:
    """A tiny debug Llama (2 layers, width 64, 4 heads / 2 KV groups) for tests."""
    return LlamaArch(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=128,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        tie_word_embeddings=tie_word_embeddings,
    )
