"""LlamaArch -> megatron-core TransformerConfig, vocab padding, layer-spec choice."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.models.arch import (
    LlamaArch,
    padded_vocab_size,
    tiny_llama,
    to_transformer_config,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "vocab,divisor,tp,padded",
    [
        (32000, 128, 1, 32000),
        (32000, 128, 8, 32768),
        (49152, 128, 2, 49152),
        (131072 + 1, 128, 1, 131200),
        (100, 64, 2, 128),
    ],
)
def test_padded_vocab_size(vocab, divisor, tp, padded):
    assert padded_vocab_size(vocab, divisor, tp) == padded


def test_transformer_config_carries_the_llama_shape():
    nemo = LlamaArch(
        num_layers=40,
        hidden_size=5120,
        num_attention_heads=32,
        num_query_groups=8,
        ffn_hidden_size=14336,
        vocab_size=131072,
        kv_channels=128,
        rotary_base=1e6,
    )
    cfg = to_transformer_config(nemo, torch.bfloat16, tensor_model_parallel_size=4)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == (40, 5120, 32)
    assert cfg.kv_channels == 128 != 5120 // 32  # Mistral-Nemo's head_dim
    assert cfg.num_query_groups == 8 and cfg.gated_linear_unit and cfg.normalization == "RMSNorm"
    assert not cfg.add_bias_linear and cfg.bf16 and cfg.params_dtype == torch.bfloat16
    assert cfg.tensor_model_parallel_size == 4


def test_sliding_window_maps_to_window_size():
    arch = tiny_llama()
    arch.sliding_window = 4096
    assert to_transformer_config(arch).window_size == (4095, 0)


def test_arch_dict_round_trip_and_unknown_keys():
    arch = tiny_llama(tie_word_embeddings=True)
    assert LlamaArch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="unknown LlamaArch keys: \\['hidden'\\]"):
        LlamaArch.from_dict({**arch.to_dict(), "hidden": 3})


def test_local_layer_spec_without_transformer_engine_gpu():
    from megatron_lang.models.gpt import layer_spec, transformer_engine_available

    if torch.cuda.is_available():
        pytest.skip("CPU-only expectation")
    assert not transformer_engine_available()
    spec = layer_spec(to_transformer_config(tiny_llama()))
    linear = spec.submodules.self_attention.submodules.linear_qkv
    assert linear.__module__.startswith("megatron.core.tensor_parallel")


def test_fused_kernels_only_with_cuda(monkeypatch):
    from megatron_lang.models.gpt import gpu_fusions

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_fusions(use_te=True) == {}
    cfg = to_transformer_config(tiny_llama())
    assert not (
        cfg.bias_activation_fusion or cfg.gradient_accumulation_fusion or cfg.apply_rope_fusion
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    flags = gpu_fusions(use_te=False)
    assert flags["bias_activation_fusion"] and flags["cross_entropy_loss_fusion"]
    assert flags["apply_rope_fusion"] is False  # TE's fused RoPE needs the TE spec
