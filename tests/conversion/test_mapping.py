"""Mapping tables, typed transforms and from_hf_config for the real model shapes."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.conversion import ConversionError, from_hf_config
from megatron_lang.conversion.families import FAMILIES
from megatron_lang.conversion.mapping import GATE_UP, QKV, expand
from megatron_lang.models.arch import LlamaArch


def _arch(heads=4, groups=2, head_dim=None) -> LlamaArch:
    return LlamaArch(2, 8, heads, groups, 16, 32, kv_channels=head_dim)


@pytest.mark.unit
def test_qkv_fusion_groups_heads_per_kv_group():
    a = _arch(heads=4, groups=2, head_dim=3)  # head_dim 3 != 8/4
    q = torch.arange(4 * 3).float().repeat_interleave(8).reshape(12, 8)  # row id = q row
    k = 100 + torch.arange(2 * 3).float().repeat_interleave(8).reshape(6, 8)
    v = 200 + torch.arange(2 * 3).float().repeat_interleave(8).reshape(6, 8)
    fused = QKV.to_megatron([q, k, v], a)
    rows = fused[:, 0].tolist()
    # group 0: q heads 0,1 (rows 0-5), k head 0, v head 0; group 1: q heads 2,3, k 1, v 1
    assert rows == [0, 1, 2, 3, 4, 5, 100, 101, 102, 200, 201, 202,
                    6, 7, 8, 9, 10, 11, 103, 104, 105, 203, 204, 205]  # fmt: skip
    back = QKV.to_hf(fused, a)
    assert all(torch.equal(x, y) for x, y in zip(back, [q, k, v]))
    bias = QKV.to_megatron([q[:, 0], k[:, 0], v[:, 0]], a)
    assert torch.equal(bias, fused[:, 0])


@pytest.mark.unit
def test_gate_up_fusion_roundtrip():
    g, u = torch.randn(16, 8), torch.randn(16, 8)
    fused = GATE_UP.to_megatron([g, u], _arch())
    assert torch.equal(fused[:16], g) and torch.equal(fused[16:], u)
    assert all(torch.equal(x, y) for x, y in zip(GATE_UP.to_hf(fused, _arch()), [g, u]))


@pytest.mark.unit
def test_tables_cover_each_tensor_once():
    a = _arch()
    for fam in FAMILIES.values():
        convs = expand(fam.rules, LlamaArch(**{**a.to_dict(), "family": fam.name}))
        hf = [n for c in convs for n in c.hf]
        assert len(hf) == len(set(hf))
        assert any(c.megatron == "output_layer.weight" for c in convs)
    tied = expand(
        FAMILIES["llama"].rules, LlamaArch(**{**a.to_dict(), "tie_word_embeddings": True})
    )
    assert not any("lm_head" in n for c in tied for n in c.hf)


def _cfg(cls, **kw):
    return cls(**kw)


@pytest.mark.unit
def test_from_hf_config_real_shapes():
    from transformers import LlamaConfig, MistralConfig

    llama2 = from_hf_config(LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                        num_hidden_layers=32, num_attention_heads=32,
                                        num_key_value_heads=32, max_position_embeddings=4096))  # fmt: skip
    assert (llama2.num_query_groups, llama2.head_dim, llama2.rope_scaling) == (32, 128, None)
    llama31 = from_hf_config(LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                         num_hidden_layers=32, num_attention_heads=32,
                                         num_key_value_heads=8, max_position_embeddings=131072,
                                         rope_theta=500000.0,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                       "original_max_position_embeddings": 8192}))  # fmt: skip
    assert llama31.rotary_base == 500000.0 and llama31.rope_scaling["factor"] == 8.0
    assert llama31.num_query_groups == 8
    m01 = from_hf_config(MistralConfig(sliding_window=4096))
    assert m01.sliding_window == 4096 and m01.family == "mistral"
    assert from_hf_config(MistralConfig(sliding_window=None)).sliding_window is None
    nemo = from_hf_config(MistralConfig(hidden_size=5120, num_attention_heads=32, head_dim=128,
                                        num_key_value_heads=8, intermediate_size=14336,
                                        num_hidden_layers=40, vocab_size=131072,
                                        rope_theta=1000000.0, sliding_window=None))  # fmt: skip
    assert nemo.kv_channels == 128 and nemo.hidden_size // nemo.num_attention_heads == 160


@pytest.mark.unit
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
        ({"attention_bias": True}, "attention_bias=True"),
        ({"mlp_bias": True}, "mlp_bias=True"),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
            "unsupported rope scaling type 'yarn'",
        ),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 2.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
                "max_position_embeddings": 16384,
            },
            "low_freq_factor=2.0 differs from megatron-core's built-in llama3 value 1.0",
        ),  # fmt: skip
    ],
)
def test_from_hf_config_rejects_unsupported_options(kwargs, message):
    from transformers import LlamaConfig

    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_hf_config(LlamaConfig(**kwargs))


@pytest.mark.unit
def test_unsupported_architecture():
    from transformers import GPT2Config

    with pytest.raises(ConversionError, match="unsupported architecture 'GPT2LMHeadModel'"):
        from_hf_config(GPT2Config(architectures=["GPT2LMHeadModel"]))
