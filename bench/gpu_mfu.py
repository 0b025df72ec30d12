"""Benchmark: training throughput and MFU of a Llama-3-8B-shaped model on one GPU (or more).

A slice of Llama-3-8B (hidden 4096, 32 heads, 8 KV groups, FFN 14336, RoPE base 500000,
sequence 8192) with as many layers as fit (``--layers``, default 8; reduced by 2 on
CUDA out-of-memory when running on a single GPU), built by
``megatron_lang.models.gpt.build_gpt_model`` with TransformerEngine's layer spec when TE
is present.  The vocabulary shrinks with the layers (``128256 x layers / 32``, a
multiple of 128: 32,000 at 8 layers), so the slice has the full model's mix: the logits
are ~6 % of the FLOPs as in the 32-layer model (with the whole 128256 vocabulary and 8
layers they would be 21 %, and the MFU not comparable with full-model figures), and
embedding, output layer and optimizer state keep their share of the parameters.
``--full-vocab`` keeps 128256 (e.g. to see the real logits' memory).  Runs BF16 and, when TE imports, FP8 (``fp8="hybrid"``, ``--fp8-recipe``
delayed or tensorwise/current scaling): warmup steps, then timed training steps, each
megatron-core's forward/backward schedule over the micro-batches plus a megatron-core
optimizer step (Adam, ``--distributed-optimizer`` optional), on random tokens.  Prints
tokens/s, TFLOP/s per GPU (``megatron_lang.training.flops``, Megatron's formula), MFU
(model FLOPs) and, with ``--recompute``, HFU (recomputed forward passes counted too), and
the logits' share of the FLOPs next to the full model's.

For reference, NVIDIA reports 744 TFLOP/s/GPU for Llama-3-8B in FP8 on H100.

Without CUDA it says so and exits 0.  ``--cpu-smoke`` runs the same code path on CPU
with a tiny shape on gloo (world size 1) to show it works end to end; its figures are
labelled CPU smoke and mean nothing for GPUs.

Usage::

    python bench/gpu_mfu.py                        # BF16 (+ FP8 when TE is present)
    python bench/gpu_mfu.py --layers 6 --precision fp8 --fp8-recipe tensorwise
    torchrun --nproc-per-node 8 bench/gpu_mfu.py   # data-parallel over 8 GPUs
    python bench/gpu_mfu.py --cpu-smoke            # tiny shape on CPU/gloo
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

NVIDIA_REFERENCE_TFLOPS = 744.0  # Llama-3-8B FP8, H100, TFLOP/s per GPU (NVIDIA)
FULL_LAYERS = 32  # Llama-3-8B
FULL_VOCAB = 128256


@dataclass
class Result:
    """Figures of one timed run."""

    label: str
    precision: str
    layers: int
    seq_length: int
    global_batch_size: int
    world_size: int
    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    vocab_size: int
    logits_share: float
    """Logits' share of this model's training FLOPs."""
    full_model_logits_share: float
    """The same share in the 32-layer Llama-3-8B (128256 vocabulary) at this sequence length."""
    tflops_per_gpu: float
    """Model TFLOP/s per GPU (no recomputation counted)."""
    mfu: float | None
    hfu: float | None
    """Hardware FLOPs utilisation (recomputed forward passes counted); = MFU without."""
    mfu_vs_bf16_peak: float | None
    peak_tflops: float | None
    max_memory_gb: float | None
    loss: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Reference: NVIDIA reports 744 TFLOP/s/GPU for Llama-3-8B FP8 on H100.",
    )
    p.add_argument("--layers", type=int, default=8, help="transformer layers (default 8)")
    p.add_argument("--seq-length", type=int, default=8192, help="tokens per sequence")
    p.add_argument("--micro-batch-size", type=int, default=1, help="sequences per micro-batch")
    p.add_argument(
        "--num-microbatches", type=int, default=4, help="micro-batches per step (grad. accum.)"
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument(
        "--precision",
        choices=["bf16", "fp8", "both"],
        default="both",
        help="both = BF16, then FP8 when TransformerEngine is present (default)",
    )
    p.add_argument(
        "--fp8-recipe",
        choices=["delayed", "tensorwise", "current"],
        default="delayed",
        help="FP8 scaling: delayed (amax history) or tensorwise = current scaling",
    )
    p.add_argument("--fp8-amax-history-len", type=int, default=1024, help="delayed scaling only")
    p.add_argument(
        "--recompute",
        choices=["none", "selective", "full"],
        default="none",
        help="activation recomputation (counted in HFU, not in MFU)",
    )
    p.add_argument("--distributed-optimizer", action="store_true", help="shard optimizer state")
    p.add_argument(
        "--full-vocab",
        action="store_true",
        help="keep the 128256 vocabulary instead of scaling it with the layers (the logits "
        "are then a larger share of the FLOPs than in the 32-layer model)",
    )
    p.add_argument(
        "--no-auto-reduce", action="store_true", help="fail on OOM instead of removing layers"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny shape on CPU/gloo, world size 1, a few steps: proves the code path only",
    )
    args = p.parse_args(argv)
    if not args.cpu_smoke and not args.full_vocab and not 1 <= args.layers <= FULL_LAYERS:
        p.error(f"--layers {args.layers}: between 1 and {FULL_LAYERS} (Llama-3-8B's layers)")
    if args.fp8_recipe == "current":
        args.fp8_recipe = "tensorwise"
    if args.cpu_smoke:
        args.layers, args.seq_length = 2, 64
        args.micro_batch_size, args.num_microbatches = 2, 2
        args.warmup, args.steps = 1, 3
        args.precision = "fp32"
    return args


def scaled_vocab(layers: int, full_layers: int = FULL_LAYERS, full_vocab: int = FULL_VOCAB) -> int:
    """Vocabulary of a ``layers``-layer slice with the full model's logits : layers ratio.

    ``full_vocab x layers / full_layers`` rounded to a multiple of 128 (no padding
    then; at least 128). The logits' FLOPs and the embedding and output parameters then
    scale with the layers, as everything else in the slice does.
    """
    if not 1 <= layers <= full_layers:
        raise ValueError(f"layers={layers}: between 1 and {full_layers}")
    return max(128, round(full_vocab * layers / full_layers / 128) * 128)


def logits_share(arch, seq_length: int, padded_vocab: int | None = None) -> float:
    """Share of the logits in the training FLOPs of ``arch`` (3x forward: the same share)."""
    from megatron_lang.training.flops import forward_flops_per_token

    f = forward_flops_per_token(arch, seq_length, padded_vocab=padded_vocab)
    return f.logits / f.total


def bench_arch(layers: int, seq_length: int, cpu_smoke: bool, full_vocab: bool = False):
    """Llama-3-8B slice (vocabulary scaled with the layers) or a tiny shape for the CPU smoke run."""
    from megatron_lang.models.arch import LlamaArch

    if cpu_smoke:
        return LlamaArch(
            num_layers=layers,
            hidden_size=64,
            num_attention_heads=4,
            num_query_groups=2,
            ffn_hidden_size=224,
            vocab_size=512,
            max_position_embeddings=seq_length,
            rotary_base=500000.0,
        )
    return LlamaArch(
        num_layers=layers,
        hidden_size=4096,
        num_attention_heads=32,
        num_query_groups=8,
        ffn_hidden_size=14336,
        vocab_size=FULL_VOCAB if full_vocab else scaled_vocab(layers),
        max_position_embeddings=seq_length,
        rotary_base=500000.0,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(args: argparse.Namespace, precision: str, layers: int, world_size: int):
    """Model (DDP-wrapped), optimizer and config for one run."""
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron_lang.models.arch import to_transformer_config
    from megatron_lang.models.gpt import build_gpt_model, gpu_fusions, transformer_engine_available
    from megatron_lang.platform import set_seed

    arch = bench_arch(layers, args.seq_length, args.cpu_smoke, args.full_vocab)
    set_seed(1234)
    on_gpu = torch.cuda.is_available() and not args.cpu_smoke
    use_te = on_gpu and transformer_engine_available()
    dtype = torch.bfloat16 if on_gpu else torch.float32
    overrides: dict = gpu_fusions(use_te) if on_gpu else {}
    if precision == "fp8":
        overrides.update(fp8="hybrid", fp8_recipe=args.fp8_recipe)
        if args.fp8_recipe == "delayed":
            overrides.update(
                fp8_amax_history_len=args.fp8_amax_history_len, fp8_amax_compute_algo="max"
            )
    if args.recompute == "full":
        overrides.update(
            recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1
        )
    elif args.recompute == "selective":
        overrides["recompute_granularity"] = "selective"
    config = to_transformer_config(arch, params_dtype=dtype, **overrides)
    model = build_gpt_model(arch, config, use_te=use_te)
    if on_gpu:
        model.cuda(torch.cuda.current_device())
    ddp = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            # overlap the data-parallel gradient reduce with the backward pass; the
            # parameter all-gather is left synchronous (no param_sync_func wiring here)
            overlap_grad_reduce=on_gpu and world_size > 1,
            use_distributed_optimizer=args.distributed_optimizer,
        ),
        model,
    )
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    opt = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=1e-5,
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            clip_grad=1.0,
            bf16=dtype == torch.bfloat16,
            params_dtype=dtype,
            use_distributed_optimizer=args.distributed_optimizer,
        ),
        [ddp],
    )
    return arch, config, ddp, opt, use_te


def _loss_func(loss_mask_BS: torch.Tensor, output_BS: torch.Tensor):
    loss = (output_BS.float() * loss_mask_BS).sum() / loss_mask_BS.sum()
    # clone: the schedule divides the returned loss in place by the micro-batch count
    return loss, {"loss": loss.detach().clone()}


def _forward_step(data_iterator, model):
    mb = next(data_iterator)
    out_BS = model(mb["tokens"], mb["position_ids"], None, labels=mb["labels"])
    from functools import partial

    return out_BS, partial(_loss_func, mb["loss_mask"])


def run_one(args: argparse.Namespace, precision: str, layers: int, world_size: int) -> Result:
    """Build, warm up and time one configuration."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_lang.training.flops import (
        achieved_tflops_per_gpu,
        hfu,
        mfu,
        peak_tflops,
        step_flops,
    )
    from megatron_lang.training.metrics import memory_stats

    arch, config, ddp, opt, use_te = build(args, precision, layers, world_size)
    on_gpu = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    b, s = args.micro_batch_size, args.seq_length
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (b, s + 1), generator=g).to(device)
    mb = {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "position_ids": torch.arange(s, device=device).expand(b, s).contiguous(),
        "loss_mask": torch.ones(b, s, device=device),
    }
    fb = get_forward_backward_func()

    def step() -> float:
        ddp.zero_grad_buffer()
        opt.zero_grad()
        out = fb(
            forward_step_func=_forward_step,
            data_iterator=itertools.repeat(mb),
            model=[ddp],
            num_microbatches=args.num_microbatches,
            seq_length=s,
            micro_batch_size=b,
            forward_only=False,
        )
        ok, _grad_norm, _ = opt.step()
        if not ok:
            raise RuntimeError("optimizer step skipped (non-finite gradients)")
        return sum(float(d["loss"]) for d in out) / max(len(out), 1)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], float("nan")
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    step_time = statistics.median(times)
    gbs = b * args.num_microbatches * world_size
    padded = ddp.module.vocab_size  # as built (padded)
    recompute = None if args.recompute == "none" else args.recompute
    flops = step_flops(arch, s, gbs, recompute=recompute, padded_vocab=padded)
    tflops = achieved_tflops_per_gpu(flops.model, step_time, world_size)
    hw_tflops = achieved_tflops_per_gpu(flops.hardware, step_time, world_size)
    full = bench_arch(FULL_LAYERS, s, cpu_smoke=False, full_vocab=True)  # Llama-3-8B
    peak = peak_tflops(None, precision) if on_gpu and precision != "fp32" else None
    bf16_peak = peak_tflops(None, "bf16") if on_gpu else None
    mem = memory_stats()
    label = "CPU smoke" if args.cpu_smoke else ("TE" if use_te else "local spec")
    result = Result(
        label=label,
        precision=precision,
        layers=layers,
        seq_length=s,
        global_batch_size=gbs,
        world_size=world_size,
        step_time_s=step_time,
        tokens_per_s=gbs * s / step_time,
        tokens_per_s_per_gpu=gbs * s / step_time / world_size,
        vocab_size=padded,
        logits_share=logits_share(arch, s, padded),
        full_model_logits_share=logits_share(full, s),
        tflops_per_gpu=tflops,
        mfu=mfu(tflops, peak),
        hfu=hfu(hw_tflops, peak),
        mfu_vs_bf16_peak=mfu(tflops, bf16_peak),
        peak_tflops=peak,
        max_memory_gb=mem.get("max_allocated_gb", mem.get("cpu_rss_gb")),
        loss=loss,
    )
    return result  # model, optimizer and batch are freed with this frame


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return (
        isinstance(e, torch.cuda.OutOfMemoryError)
        or "out of memory" in msg
        or ("alloc_failed" in msg)
    )


def run_with_auto_reduce(
    args: argparse.Namespace, precision: str, world_size: int
) -> Result | None:
    """``run_one``, removing 2 layers after each CUDA OOM (single GPU only)."""
    layers = args.layers
    while layers >= 1:
        oom = False
        try:
            return run_one(args, precision, layers, world_size)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or a library's alloc failure
            if not _is_oom(e) or args.no_auto_reduce or world_size > 1:
                raise
            oom = True
        if oom:
            _release()
            print(f"  OOM with {layers} layers ({precision}); retrying with {layers - 2}")
            layers -= 2
    print(f"  {precision}: does not fit even with 1 layer")
    return None


def _fmt(r: Result) -> str:
    mfu_s = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
    extra = ""
    if r.precision == "fp8" and r.mfu_vs_bf16_peak is not None:
        extra = f" ({100 * r.mfu_vs_bf16_peak:.1f}% of the BF16 peak)"
    if r.hfu is not None and r.mfu is not None and r.hfu != r.mfu:
        extra += f" | HFU {100 * r.hfu:.1f}%"
    mem = f"{r.max_memory_gb:.1f} GB" if r.max_memory_gb is not None else "n/a"
    unit = "rank" if r.label == "CPU smoke" else "GPU"
    return (
        f"[{r.label}] {r.precision:>4}  layers={r.layers} vocab={r.vocab_size} "
        f"seq={r.seq_length} gbs={r.global_batch_size} {unit}s={r.world_size} | "
        f"step {r.step_time_s:.3f} s | "
        f"{r.tokens_per_s:,.0f} tok/s ({r.tokens_per_s_per_gpu:,.0f}/{unit}) | "
        f"{r.tflops_per_gpu:.4g} TFLOP/s/{unit} | MFU {mfu_s}{extra} | "
        f"logits {100 * r.logits_share:.1f}% of FLOPs (32 layers: "
        f"{100 * r.full_model_logits_share:.1f}%) | mem {mem} | loss {r.loss:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            "gpu_mfu: CUDA is not available on this machine; nothing to measure. "
            "Run it on a GPU node, or pass --cpu-smoke to exercise the code path on CPU."
        )
        return 0

    from megatron_lang.models.gpt import transformer_engine_available
    from megatron_lang.platform import (
        ParallelLayout,
        destroy_distributed,
        init_distributed,
        initialize_model_parallel,
        read_dist_env,
    )

    env = read_dist_env()
    if env.launcher == "single" and "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
        env = read_dist_env()
    init_distributed(env)
    try:
        initialize_model_parallel(ParallelLayout())
        rank0 = env.rank == 0
        if args.cpu_smoke:
            precisions = ["fp32"]
        else:
            te = transformer_engine_available()
            precisions = ["bf16", "fp8"] if args.precision == "both" else [args.precision]
            if "fp8" in precisions and not te:
                if rank0:
                    print("gpu_mfu: TransformerEngine is not importable: FP8 skipped")
                precisions.remove("fp8")
            if rank0:
                print(
                    f"gpu_mfu: {torch.cuda.get_device_name()} x {env.world_size}, "
                    f"TE {'yes' if te else 'no'}, recompute {args.recompute}, "
                    f"distributed optimizer {'on' if args.distributed_optimizer else 'off'}"
                )
        results = []
        for precision in precisions:
            r = run_with_auto_reduce(args, precision, env.world_size)
            _release()
            if r is None:
                continue
            results.append(r)
            if rank0:
                print(_fmt(r), flush=True)
        if rank0 and not args.cpu_smoke:
            print(
                f"reference: NVIDIA reports {NVIDIA_REFERENCE_TFLOPS:.0f} TFLOP/s/GPU "
                "for Llama-3-8B FP8 on H100 (full 32-layer model)."
            )
        if rank0 and args.cpu_smoke:
            print("CPU smoke: tiny shape on gloo; figures prove the code path, not performance.")
        if rank0 and args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
