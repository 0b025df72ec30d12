"""Training FLOPs, device peaks and model FLOPs utilisation (MFU).

The count follows Megatron-LM's ``num_floating_point_operations`` (the
"APPENDIX: FLOATING-POINT OPERATIONS" of Narayanan et al. 2021,
https://arxiv.org/abs/2104.04473) for a dense Llama-family decoder: only matrix
multiplications are counted, each ``[m, k] x [k, n]`` product as ``2*m*n*k``.
Per token and per layer, in the forward pass, with ``h`` the hidden size, ``a``
query heads, ``g`` KV groups, ``d`` the head dim, ``q = a*d``, ``f`` the FFN
width, ``s`` the sequence length:

* Q and output projections: ``2*h*q`` each; K and V projections: ``2*h*g*d`` each
  (GQA shrinks only these two);
* attention scores ``Q K^T`` and context ``P V``: ``2*s*q`` each, halved for causal
  attention (only the lower triangle is computed; Megatron's ``s/2`` convention);
* SwiGLU MLP: three matmuls (gate, up, down) of ``2*h*f`` each.

Plus the logits layer ``2*h*V`` per token (``V`` the padded vocabulary). The
backward pass costs twice the forward (data and weight gradients), so training
is ``3x`` the forward.

Two utilisation figures come from these counts:

* **MFU** (model FLOPs utilisation): the model's FLOPs, ``3x`` forward, whatever the
  recomputation (``6*N*tokens`` + attention). This is Megatron-LM's
  ``num_floating_point_operations`` and the figure to compare between runs and with
  published numbers.
* **HFU** (hardware FLOPs utilisation): what the GPUs actually compute, including
  recomputed forward passes: full recomputation repeats the transformer layers'
  forward (``4x`` for the layers, the logits stay ``3x``); selective recomputation
  repeats the core attention (the ``Q K^T`` and ``P V`` matmuls). HFU >= MFU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from megatron_lang.models.arch import LlamaArch, padded_vocab_size

__all__ = [
    "ForwardFlops",
    "StepFlops",
    "achieved_tflops_per_gpu",
    "forward_flops_per_token",
    "hfu",
    "mfu",
    "peak_tflops",
    "step_flops",
    "training_flops_per_step",
    "training_flops_per_token",
]

RECOMPUTE = (None, "selective", "full")
"""``model.recompute`` values (also accepted: True = ``full``, False = None)."""


@dataclass(frozen=True)
class ForwardFlops:
    """Forward-pass FLOPs per token, by component, summed over all layers."""

    qkv_proj: float
    """Q, K and V projections."""
    attention: float
    """Attention scores (Q K^T) and context (P V)."""
    out_proj: float
    """Attention output projection."""
    mlp: float
    """SwiGLU gate, up and down projections."""
    logits: float
    """Output layer (hidden -> padded vocabulary)."""

    @property
    def layers(self) -> float:
        """Everything inside the transformer layers (recomputed under full recompute)."""
        return self.qkv_proj + self.attention + self.out_proj + self.mlp

    @property
    def total(self) -> float:
        """Whole forward pass per token."""
        return self.layers + self.logits


def forward_flops_per_token(
    arch: LlamaArch,
    seq_length: int,
    causal: bool = True,
    padded_vocab: int | None = None,
) -> ForwardFlops:
    """Forward-pass FLOPs per token of ``arch`` at ``seq_length``.

    Args:
        arch: model shape (GQA via ``num_query_groups``, head dim via ``head_dim``).
        seq_length: tokens per sequence (the attention span).
        causal: causal attention computes half of the ``s x s`` score matrix.
        padded_vocab: vocabulary size of the output layer as built; default
            ``arch.vocab_size`` padded to a multiple of 128 (``build_gpt_model`` at TP=1).
            Pass the model's padded size when TP > 1 or a checkpoint fixes it.

    Returns:
        The per-component breakdown.
    """
    if seq_length < 1:
        raise ValueError(f"seq_length must be positive, got {seq_length}")
    h = arch.hidden_size
    d = arch.head_dim
    q = arch.num_attention_heads * d
    kv = arch.num_query_groups * d
    L = arch.num_layers
    V = padded_vocab if padded_vocab is not None else padded_vocab_size(arch.vocab_size)
    span = seq_length / 2 if causal else seq_length
    return ForwardFlops(
        qkv_proj=L * 2.0 * h * (q + 2 * kv),
        attention=L * 2.0 * (2.0 * span * q),
        out_proj=L * 2.0 * q * h,
        mlp=L * 3 * 2.0 * h * arch.ffn_hidden_size,
        logits=2.0 * h * V,
    )


def _recomputed_forward(f: ForwardFlops, recompute: str | bool | None) -> float:
    """Forward FLOPs per token that recomputation repeats in the backward pass."""
    if recompute is True:
        recompute = "full"
    elif recompute is False:
        recompute = None
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute={recompute!r}: one of {RECOMPUTE} (or True/False)")
    if recompute == "full":
        return f.layers
    if recompute == "selective":
        return f.attention  # megatron-core's selective recompute: the core attention
    return 0.0


def training_flops_per_token(
    arch: LlamaArch,
    seq_length: int,
    recompute: str | bool | None = False,
    causal: bool = True,
    padded_vocab: int | None = None,
) -> float:
    """Forward + backward FLOPs per token: ``3x`` forward, plus what ``recompute`` repeats.

    Args:
        recompute: None/False: model FLOPs (the MFU numerator). ``"full"``/True: the
            layers' forward once more; ``"selective"``: the core attention once more.
            With recomputation the count is hardware FLOPs (the HFU numerator), not
            model FLOPs: see :func:`step_flops` for both.
    """
    f = forward_flops_per_token(arch, seq_length, causal=causal, padded_vocab=padded_vocab)
    return 3 * f.total + _recomputed_forward(f, recompute)


def training_flops_per_step(
    arch: LlamaArch,
    seq_length: int,
    global_batch_size: int,
    recompute: str | bool | None = False,
    causal: bool = True,
    padded_vocab: int | None = None,
) -> float:
    """FLOPs of one optimizer step over ``global_batch_size`` sequences (all GPUs together).

    Args:
        arch: model shape.
        seq_length: tokens per sequence.
        global_batch_size: sequences per optimizer step, over all data-parallel
            ranks and micro-batches.
        recompute: count recomputed forward passes too (``"full"``/True, ``"selective"``):
            hardware FLOPs, for HFU. Leave it off (the default) for MFU.
        causal: causal attention (half the score matrix); False for bidirectional.
        padded_vocab: output-layer vocabulary as built (see :func:`forward_flops_per_token`).
    """
    per_token = training_flops_per_token(
        arch, seq_length, recompute=recompute, causal=causal, padded_vocab=padded_vocab
    )
    return per_token * seq_length * global_batch_size


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one optimizer step (all GPUs together), for MFU and for HFU."""

    model: float
    """Model FLOPs: ``3x`` forward, no recomputation (the MFU numerator)."""
    hardware: float
    """Model FLOPs + recomputed forward passes (the HFU numerator)."""


def step_flops(
    arch: LlamaArch,
    seq_length: int,
    global_batch_size: int,
    recompute: str | bool | None = None,
    causal: bool = True,
    padded_vocab: int | None = None,
) -> StepFlops:
    """Model and hardware FLOPs of one step; ``recompute`` is ``model.recompute``.

    The trainer's ``mfu`` divides the achieved rate of ``model`` by the peak, ``hfu``
    that of ``hardware``; without recomputation the two are equal.
    """
    args = (arch, seq_length, global_batch_size)
    kw = {"causal": causal, "padded_vocab": padded_vocab}
    return StepFlops(
        model=training_flops_per_step(*args, recompute=None, **kw),
        hardware=training_flops_per_step(*args, recompute=recompute, **kw),
    )


def achieved_tflops_per_gpu(flops_per_step: float, step_time_s: float, num_gpus: int) -> float:
    """TFLOP/s per GPU: ``flops_per_step / step_time_s / num_gpus / 1e12``."""
    if step_time_s <= 0 or num_gpus < 1:
        raise ValueError(f"need step_time_s > 0 and num_gpus >= 1, got {step_time_s}, {num_gpus}")
    return flops_per_step / step_time_s / num_gpus / 1e12


# Dense (no sparsity) peak TFLOP/s by device, most specific name first.
# fp16 equals bf16 and tf32 is half of bf16 on these parts; None = not supported.
_PEAKS: tuple[tuple[str, dict[str, float | None]], ...] = (
    ("GH200", {"bf16": 989.0, "fp8": 1979.0, "tf32": 494.5}),
    ("H200 NVL", {"bf16": 835.5, "fp8": 1670.5, "tf32": 417.5}),
    ("H200", {"bf16": 989.0, "fp8": 1979.0, "tf32": 494.5}),
    ("H100 NVL", {"bf16": 835.5, "fp8": 1670.5, "tf32": 417.5}),
    ("H100 PCIE", {"bf16": 756.0, "fp8": 1513.0, "tf32": 378.0}),
    ("H100", {"bf16": 989.0, "fp8": 1979.0, "tf32": 494.5}),  # SXM / HBM3
    ("H800", {"bf16": 989.0, "fp8": 1979.0, "tf32": 494.5}),
    ("A100", {"bf16": 312.0, "fp8": None, "tf32": 156.0}),
)
_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "bf16",
    "float16": "bf16",
    "half": "bf16",
    "fp8": "fp8",
    "e4m3": "fp8",
    "hybrid": "fp8",
    "tf32": "tf32",
}


def peak_tflops(device_name: str | None = None, dtype: str = "bf16") -> float | None:
    """Dense peak TFLOP/s of one GPU for ``dtype``, or None when unknown.

    Args:
        device_name: e.g. ``"NVIDIA H100 80GB HBM3"`` as from
            ``torch.cuda.get_device_name()``; default: the current CUDA device,
            None (unknown) without CUDA.
        dtype: ``"bf16"`` (also fp16), ``"fp8"`` or ``"tf32"``.

    Returns:
        The peak, or None for unknown devices, CPUs, and dtypes the device lacks
        (FP8 on A100).

    Raises:
        ValueError: for a dtype name not listed above.
    """
    key = _DTYPE_ALIASES.get(dtype.lower())
    if key is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_ALIASES)}")
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    name = re.sub(r"[\s_-]+", " ", device_name.upper())
    for pattern, peaks in _PEAKS:
        if re.search(rf"(^|[^A-Z0-9]){pattern}([^0-9]|$)", name):
            return peaks[key]
    return None


def mfu(achieved_tflops_per_gpu: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation as a fraction (0.45 = 45%), or None when the peak is unknown.

    ``achieved_tflops_per_gpu`` must come from model FLOPs (``StepFlops.model``: no
    recomputation counted).
    """
    if peak is None or peak <= 0:
        return None
    return achieved_tflops_per_gpu / peak


def hfu(achieved_hardware_tflops_per_gpu: float, peak: float | None) -> float | None:
    """Hardware FLOPs utilisation as a fraction, or None when the peak is unknown.

    ``achieved_hardware_tflops_per_gpu`` comes from ``StepFlops.hardware`` (recomputed
    forward passes included).
    """
    return mfu(achieved_hardware_tflops_per_gpu, peak)
