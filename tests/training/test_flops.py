"""Training FLOPs (Megatron's formula with GQA, SwiGLU, causal attention), peaks and MFU."""

from __future__ import annotations

import pytest

from megatron_lang.models.arch import LlamaArch
from megatron_lang.training.flops import (
    achieved_tflops_per_gpu,
    forward_flops_per_token,
    hfu,
    mfu,
    peak_tflops,
    step_flops,
    training_flops_per_step,
    training_flops_per_token,
)

pytestmark = pytest.mark.unit


def mm(m: int, n: int, k: int) -> float:
    """FLOPs of an [m, k] x [k, n] matmul: one multiply and one add per term."""
    return 2.0 * m * n * k


def _tiny(num_query_groups: int = 2) -> LlamaArch:
    # L=2, h=8, a=4 heads of d=2, g KV groups, f=16, V=128 (already a multiple of 128)
    return LlamaArch(
        num_layers=2,
        hidden_size=8,
        num_attention_heads=4,
        num_query_groups=num_query_groups,
        ffn_hidden_size=16,
        vocab_size=128,
    )


def _hand_forward_per_sequence(L, s, h, a, g, d, f, V, causal: bool) -> float:
    """Forward FLOPs of one sequence, matmul by matmul."""
    per_layer = (
        mm(s, a * d, h)  # Q = x W_q
        + mm(s, g * d, h)  # K = x W_k
        + mm(s, g * d, h)  # V = x W_v
        + a * mm(s, s, d)  # scores Q K^T, per head
        + a * mm(s, d, s)  # context P V, per head
        + mm(s, h, a * d)  # output projection
        + mm(s, f, h)  # gate
        + mm(s, f, h)  # up
        + mm(s, h, f)  # down
    )
    if causal:
        # Megatron's convention: half of each s x s product is computed
        per_layer -= 0.5 * (a * mm(s, s, d) + a * mm(s, d, s))
    return L * per_layer + mm(s, V, h)  # + logits


@pytest.mark.parametrize("causal", [True, False])
def test_tiny_shape_matches_hand_count(causal: bool):
    L, s, h, a, g, d, f, V, B = 2, 4, 8, 4, 2, 2, 16, 128, 3
    fwd = _hand_forward_per_sequence(L, s, h, a, g, d, f, V, causal)
    expected = 3 * fwd * B  # backward = 2x forward (data + weight gradients)
    got = training_flops_per_step(_tiny(), seq_length=s, global_batch_size=B, causal=causal)
    assert got == pytest.approx(expected, rel=1e-12)
    # the numbers themselves, so a shared mistake in both counts would show:
    # per layer: Q 512 + K 256 + V 256 + scores 256 + context 256 + out 512 + MLP 3*1024
    # = 5120, causal halves scores and context: 4864; logits 2*4*128*8 = 8192
    per_layer = 4864 if causal else 5120
    assert fwd == 2 * per_layer + 8192


def test_recompute_repeats_layer_forward_only():
    L, s, h, a, g, d, f, V, B = 2, 4, 8, 4, 2, 2, 16, 128, 3
    logits = mm(s, V, h)
    layers = _hand_forward_per_sequence(L, s, h, a, g, d, f, V, True) - logits
    expected = B * (4 * layers + 3 * logits)
    got = training_flops_per_step(_tiny(), s, B, recompute=True)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("recompute", [None, False, "selective", "full", True])
def test_model_flops_never_count_recomputation(recompute):
    L, s, h, a, g, d, f, V, B = 2, 4, 8, 4, 2, 2, 16, 128, 3
    model = B * 3 * _hand_forward_per_sequence(L, s, h, a, g, d, f, V, True)
    got = step_flops(_tiny(), s, B, recompute=recompute)
    assert got.model == pytest.approx(model, rel=1e-12)  # the MFU numerator: 3x forward only
    logits = mm(s, V, h)
    layers = _hand_forward_per_sequence(L, s, h, a, g, d, f, V, True) - logits
    # causal scores + context, halved: a * (mm(s, s, d) + mm(s, d, s)) / 2 per layer
    attention = L * 0.5 * a * (mm(s, s, d) + mm(s, d, s))
    extra = {None: 0, False: 0, "selective": attention, "full": layers, True: layers}[recompute]
    assert got.hardware == pytest.approx(model + B * extra, rel=1e-12)  # the HFU numerator
    assert got.hardware == training_flops_per_step(_tiny(), s, B, recompute=recompute)


def test_mfu_and_hfu_of_a_full_recompute_run():
    # Llama-2-7B at 4096 with full recompute: the GPU computes the layers' forward 4x,
    # MFU counts 3x; over one measured step time the two differ by exactly that ratio
    flops = step_flops(LLAMA2_7B, 4096, 512, recompute="full")
    f = forward_flops_per_token(LLAMA2_7B, 4096)
    assert flops.hardware / flops.model == pytest.approx(
        (4 * f.layers + 3 * f.logits) / (3 * f.total), rel=1e-12
    )
    model_tflops = achieved_tflops_per_gpu(flops.model, 10.0, 32)
    hw_tflops = achieved_tflops_per_gpu(flops.hardware, 10.0, 32)
    assert mfu(model_tflops, 989.0) == pytest.approx(flops.model / 10.0 / 32 / 1e12 / 989.0)
    assert hfu(hw_tflops, 989.0) > mfu(model_tflops, 989.0)
    assert hfu(hw_tflops, None) is None
    with pytest.raises(ValueError, match="recompute='block'"):
        step_flops(LLAMA2_7B, 4096, 512, recompute="block")


def test_gqa_saves_exactly_the_kv_projection_difference():
    s, B, h, d = 4, 3, 8, 2
    mha = training_flops_per_step(_tiny(num_query_groups=4), s, B)
    gqa = training_flops_per_step(_tiny(num_query_groups=1), s, B)
    # K and V projections shrink from 4 to 1 head; 2 layers; 3x for fwd+bwd; B*s tokens
    kv_diff = 2 * 3 * B * (2 * mm(s, 4 * d, h) - 2 * mm(s, 1 * d, h))
    assert mha - gqa == pytest.approx(kv_diff, rel=1e-12)
    # the attention matmuls themselves do not depend on the number of KV groups
    assert (
        forward_flops_per_token(_tiny(4), s).attention
        == forward_flops_per_token(_tiny(1), s).attention
    )


def test_vocab_padding_default_and_override():
    a = _tiny()
    a.vocab_size = 100  # padded to 128 by default, as build_gpt_model does at TP=1
    assert forward_flops_per_token(a, 4).logits == 2 * 8 * 128
    assert forward_flops_per_token(a, 4, padded_vocab=256).logits == 2 * 8 * 256


LLAMA2_7B = LlamaArch(
    num_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_query_groups=32,
    ffn_hidden_size=11008,
    vocab_size=32000,
)
LLAMA3_8B = LlamaArch(
    num_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_query_groups=8,
    ffn_hidden_size=14336,
    vocab_size=128256,
    rotary_base=500000.0,
)


@pytest.mark.parametrize(
    "arch, total_params, seq",
    [
        (LLAMA2_7B, 6_738_415_616, 4096),  # published parameter count of Llama-2-7B
        (LLAMA3_8B, 8_030_261_248, 8192),  # published parameter count of Meta-Llama-3-8B
    ],
)
def test_7b_8b_match_6NT_plus_attention(arch: LlamaArch, total_params: int, seq: int):
    # 6 N T counts each weight once per token in forward (2 FLOPs) and twice in backward;
    # the input embedding is a lookup, not a matmul, so it leaves N.
    n = total_params - arch.vocab_size * arch.hidden_size
    # causal attention: 2 matmuls * 2 FLOPs * (s/2) * (heads * head_dim) per layer, x3
    attention = 3 * arch.num_layers * 2 * 2 * (seq / 2) * arch.num_attention_heads * arch.head_dim
    expected_per_token = 6 * n + attention
    got = training_flops_per_token(arch, seq)
    assert got == pytest.approx(expected_per_token, rel=0.01)
    gbs = 1024
    assert training_flops_per_step(arch, seq, gbs) == pytest.approx(got * seq * gbs, rel=1e-12)


@pytest.mark.parametrize("arch, seq", [(LLAMA2_7B, 4096), (LLAMA3_8B, 8192)])
def test_equals_megatron_closed_form(arch: LlamaArch, seq: int):
    # Megatron-LM: 12 B s L h^2 [(1 + g/a + s/(2h)) q/h + 3/2 f/h + V/(2 L h)]
    B, L, h = 16, arch.num_layers, arch.hidden_size
    a, g, q = arch.num_attention_heads, arch.num_query_groups, arch.num_attention_heads * 128
    V = 32000 if arch is LLAMA2_7B else 128256  # both already multiples of 128
    closed = (
        12
        * B
        * seq
        * L
        * h**2
        * ((1 + g / a + seq / (2 * h)) * q / h + 1.5 * arch.ffn_hidden_size / h + V / (2 * L * h))
    )
    assert training_flops_per_step(arch, seq, B) == pytest.approx(closed, rel=1e-12)


def test_llama3_8b_per_token_magnitude():
    # ~6 * 7.5e9 + attention ~ 5.5e10 FLOPs per token at s=8192
    got = training_flops_per_token(LLAMA3_8B, 8192)
    assert 5.0e10 < got < 6.0e10


@pytest.mark.parametrize(
    "name, bf16, fp8",
    [
        ("NVIDIA H100 80GB HBM3", 989.0, 1979.0),
        ("NVIDIA H100 PCIe", 756.0, 1513.0),
        ("NVIDIA H200", 989.0, 1979.0),
        ("NVIDIA GH200 480GB", 989.0, 1979.0),
        ("NVIDIA A100-SXM4-80GB", 312.0, None),
        ("NVIDIA A100 80GB PCIe", 312.0, None),
    ],
)
def test_peak_by_device_name(name: str, bf16: float, fp8: float | None):
    assert peak_tflops(name, "bf16") == bf16
    assert peak_tflops(name) == bf16
    assert peak_tflops(name, "fp8") == fp8


def test_peak_unknown_and_cpu():
    assert peak_tflops("NVIDIA GeForce RTX 3090") is None
    assert peak_tflops("NVIDIA A10") is None
    import torch

    if not torch.cuda.is_available():
        assert peak_tflops() is None
    with pytest.raises(ValueError, match="unknown dtype"):
        peak_tflops("NVIDIA H100 80GB HBM3", "int4")


def test_mfu_and_tflops():
    assert mfu(494.5, 989.0) == pytest.approx(0.5)
    assert mfu(100.0, None) is None
    # 8 GPUs, 1.6e16 FLOPs in 2 s -> 1000 TFLOP/s per GPU
    assert achieved_tflops_per_gpu(1.6e16, 2.0, 8) == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        achieved_tflops_per_gpu(1.0, 0.0, 1)
