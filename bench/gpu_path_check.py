"""The prepared GPU check of the bf16/NCCL training path (one command, a few minutes).

What CPU tests cannot run: NCCL collectives, CUDA tensors, bf16 kernels. On the GPU
machine (no network, no TransformerEngine needed) it builds a synthetic corpus and a
512-token BPE in a temporary folder, trains a tiny Llama in fp32 for 30 steps (the
"pretrained" start, saved), then continues from it for 6 steps in fp32, in bf16, and in
bf16 with ``optimizer.overlap_param_gather`` and a save, each on every visible GPU
through torchrun and NCCL. It prints the losses and checks:

* bf16 starts where the pretrained model is (not at a random model's ln 512 = 6.24)
  and stays within 0.1 nats of fp32 (the master-weights bug gave +2 nats at step 2);
* the overlap run's losses equal the plain bf16 run's, and its checkpoint saves;
* with ``data.document_attention`` the packed attention (``model.attention=packed``,
  TE off: our PyTorch fallback) follows the dense-mask reference in fp32 (SDPA on runs
  of equal segments) and in bf16 (on CUDA PyTorch's ``varlen_attn`` flash kernel), and
  the median step time of each is printed;
* one layer's packed attention (causal and bidirectional segments, hundreds of them,
  GQA) through ``varlen_attn``, through SDPA per run of segments and through SDPA with
  a dense ``[t, t]`` mask equals an fp32 reference (outputs and gradients); the
  forward+backward time and peak extra memory of each are printed;
* every job exits 0 (an all-reduce of a host tensor fails at start-up under NCCL).

Exit status 0 when every check passes, 1 otherwise. Without CUDA it runs the same
jobs on gloo (a smoke run of the script itself; it proves nothing about GPUs).

Usage::

    python bench/gpu_path_check.py            # all visible GPUs (1 is enough)
    python bench/gpu_path_check.py --gpus 1
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOLERANCE = 0.1
PACKED_TOLERANCE = 2e-3
"""fp32 losses, packed vs dense attention (TF32 matmuls on GPUs may be on)."""
PACKED_BF16_TOLERANCE = 0.05
"""bf16 losses, packed (varlen flash on CUDA) vs dense attention."""
KERNEL_TOLERANCE = {"bfloat16": 2e-2, "float32": 1e-4}
"""Largest |error| / largest |reference value| of one layer's attention output and grads."""


def build_data(root: Path) -> dict[str, str]:
    """A Zipf-distributed synthetic corpus -> BPE tokenizer -> Megatron dataset -> blend."""
    from megatron_lang.data.demo import train_bpe_tokenizer
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    rng = random.Random(0)
    letters = "abdefghijklmnoprstuvyæøå"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(400)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    texts = [
        " ".join(rng.choices(words, weights, k=rng.randint(80, 300))) + "." for _ in range(600)
    ]
    root.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer(texts, root / "tokenizer", 512)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    preprocess(
        PreprocessConfig(
            inputs=[str(root / "corpus.jsonl")],
            output_prefix=str(root / "synthetic"),
            tokenizer=str(tok),
            append_eod=True,
            progress=False,
        )
    )
    (root / "blend.yaml").write_text(
        f'root: {root}\nsplit: "95,5,0"\nsources:\n'
        "  - {name: synthetic, path: synthetic_text_document, weight: 1.0, language: xx}\n"
    )
    return {"blend": str(root / "blend.yaml"), "tokenizer": str(tok)}


def run_job(ranks: int, overrides: dict, metrics: Path) -> tuple[int, list[float], str]:
    """One training job under torchrun; its exit code, losses and output tail."""
    code, records, tail = run_job_records(ranks, overrides, metrics)
    return code, [r["loss"] for r in records], tail


def run_job_records(ranks: int, overrides: dict, metrics: Path) -> tuple[int, list[dict], str]:
    """One training job under torchrun; its exit code, step records and output tail."""
    args = [f"{k}={'null' if v is None else v}" for k, v in overrides.items()]
    args.append(f"logging.metrics_file={metrics}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={ranks}", "-m", "megatron_lang.train", *args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    records = []
    if metrics.is_file():
        records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    return out.returncode, records, (out.stdout + out.stderr)[-3000:]


def median_step_time(records: list[dict]) -> float:
    """Median ``step_time_s`` after the first step (start-up, kernel selection)."""
    import statistics

    times = [r["step_time_s"] for r in records[1:] if "step_time_s" in r]
    return statistics.median(times) if times else float("nan")


def _packed_layer_inputs(device, dtype):
    """One layer's packed micro-batch: hybrid (causal and bidirectional samples), hundreds
    of documents, GQA; Llama-3-8B heads on CUDA, small on CPU."""
    import torch

    from megatron_lang.data.packing import pack_microbatch

    cuda = device.type == "cuda"
    heads, groups, dim = (32, 8, 128) if cuda else (4, 2, 16)
    b, s = (2, 2048) if cuda else (2, 128)
    g = torch.Generator().manual_seed(0)
    starts = torch.zeros(b, s, dtype=torch.int32)
    for i in range(b):
        starts[i, torch.randperm(s - 1, generator=g)[: s // 16] + 1] = 1
    batch = pack_microbatch({"segments": starts.cumsum(1), "mntp": torch.arange(b) % 2})
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    t = b * s
    qkv = [
        torch.randn(t, n, dim, generator=g).to(device, dtype).requires_grad_()
        for n in (heads, groups, groups)
    ]
    return batch, qkv, (heads, groups, dim)


def _dense_attention(q, k, v, batch, dtype, backend=None):
    """Attention over the whole packed sequence with a dense ``[t, t]`` mask."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    cu_host, kinds = batch["segments_host"]
    lengths = torch.tensor(cu_host).diff()
    segment = torch.repeat_interleave(torch.arange(len(kinds)), lengths).to(q.device)
    bidir = torch.repeat_interleave(torch.tensor(kinds), lengths).to(q.device)
    pos = torch.arange(q.shape[0], device=q.device)
    allowed = (segment[:, None] == segment[None, :]) & (
        bidir[:, None] | (pos[:, None] >= pos[None, :])
    )
    rep = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(rep, dim=1) for x in (k, v))  # masked SDPA takes no GQA
    args = [x.to(dtype).transpose(0, 1)[None] for x in (q, k, v)]
    with sdpa_kernel(backend) if backend else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(*args, attn_mask=allowed)
    return out[0].transpose(0, 1).reshape(q.shape[0], -1)


def packed_kernel_check() -> bool:
    """The packed fallback's kernels on one layer against an fp32 dense-mask reference.

    Prints, per route, forward+backward time, peak extra memory (CUDA) and the largest
    error of the output and the q/k/v gradients relative to the reference's largest value.
    """
    import statistics
    import time
    from types import SimpleNamespace

    import torch
    from megatron.core.transformer.enums import AttnMaskType
    from torch.nn.attention import SDPBackend

    from megatron_lang.models import packed_attention as pa

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    batch, (q, k, v), (heads, groups, dim) = _packed_layer_inputs(device, dtype)
    config = SimpleNamespace(
        context_parallel_size=1,
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=dim,
        attention_dropout=0.0,
        sequence_parallel=False,
    )
    tp = SimpleNamespace(tp=SimpleNamespace(size=lambda: 1))
    layer = pa.PackedDotProductAttention(config, 1, AttnMaskType.causal, "self", pg_collection=tp)
    params = pa.packed_seq_params(batch, host_rope=False)

    def packed(route):
        def run():
            original = pa.varlen_kernel
            if route == "runs":
                pa.varlen_kernel = lambda query: None
            try:
                return layer(q, k, v, None, packed_seq_params=params)
            finally:
                pa.varlen_kernel = original

        return run

    ref_inputs = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref = _dense_attention(*ref_inputs, batch, torch.float32, [SDPBackend.MATH])
    grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(device)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad_out)
    routes = {"SDPA per run of equal segments": packed("runs")}
    if pa.varlen_kernel(q) is not None:
        routes = {"varlen_attn (flash, a call per kind)": packed("varlen"), **routes}
    else:
        print(f"  varlen_attn: not usable here ({device.type}, {dtype}); the other routes run")
    routes["SDPA, dense [t, t] mask"] = lambda: _dense_attention(q, k, v, batch, dtype)
    tolerance = KERNEL_TOLERANCE[str(dtype).removeprefix("torch.")]
    n = len(batch["segments_host"][1])
    print(
        f"packed attention, one layer fwd+bwd: t={q.shape[0]} tokens, {n} segments (causal "
        f"and bidirectional), heads {heads}/{groups}, dim {dim}, {dtype}"
    )
    ok = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for name, fn in routes.items():
        times, peak = [], 0.0
        for _ in range(8):
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            out = fn()
            grads = torch.autograd.grad(out, (q, k, v), grad_out.to(dtype))
            sync()
            times.append(time.perf_counter() - t0)
            if cuda:
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        errors = [
            float((a.detach().float() - b.detach()).abs().max() / b.detach().abs().max())
            for a, b in zip((out, *grads), (ref, *ref_grads))
        ]
        good = max(errors) <= tolerance
        ok &= good
        memory = f", peak +{peak:.0f} MiB" if cuda else ""
        print(
            f"  {name:<38} {1e3 * statistics.median(times[2:]):9.2f} ms{memory}, "
            f"max rel err {max(errors):.1e} (tolerance {tolerance}): {'ok' if good else 'FAIL'}"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpus", type=int, default=None, help="ranks (default: visible GPUs, or 1)")
    a = p.parse_args(argv)
    ranks = a.gpus or max(1, torch.cuda.device_count())
    print(
        f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU (gloo smoke run)'}, ranks {ranks}"
    )
    ok = packed_kernel_check()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the training jobs below share the GPU
    with tempfile.TemporaryDirectory(prefix="gpu-path-check-") as d:
        root = Path(d)
        data = build_data(root / "data")
        common = {
            "model.preset": "tiny-llama",
            "data.blend": data["blend"],
            "data.tokenizer": data["tokenizer"],
            "data.seq_length": 128,
            "data.micro_batch_size": 2,
            "data.global_batch_size": 8 * ranks,
            "optimizer.schedule": "constant",
            "optimizer.warmup_steps": 0,
            "train.eval_interval": 0,
            "logging.level": "WARNING",
        }
        code, losses, tail = run_job(
            ranks,
            {
                **common,
                "model.dtype": "fp32",
                "train.steps": 30,
                "optimizer.lr": 3e-3,
                "checkpoint.dir": root / "start",
            },
            root / "start.jsonl",
        )
        print(f"pretraining fp32, 30 steps: exit {code}, loss {losses[:1]} -> {losses[-1:]}")
        if code:
            print(tail)
            return 1
        start = root / "start" / (root / "start" / "latest").read_text().strip()
        cont = {
            **common,
            "model.checkpoint": start,
            "model.preset": None,
            "train.steps": 6,
            "optimizer.lr": 1e-3,
        }
        runs = {}
        for name, extra in [
            ("fp32", {"model.dtype": "fp32"}),
            ("bf16", {"model.dtype": "bf16"}),
            (
                "bf16+overlap",
                {
                    "model.dtype": "bf16",
                    "optimizer.overlap_param_gather": True,
                    "optimizer.overlap_grad_reduce": True,
                    "checkpoint.dir": root / "ov",
                },
            ),
        ]:
            code, losses, tail = run_job(ranks, {**cont, **extra}, root / f"{name}.jsonl")
            runs[name] = losses
            print(f"{name:>13}: exit {code}, losses {[round(x, 4) for x in losses]}")
            if code:
                print(tail)
                ok = False
        # packed-sequence attention without TE (our PyTorch fallback: SDPA on runs of
        # equal documents in fp32, varlen_attn flash on CUDA in bf16) against the
        # dense-mask reference, document-causal
        for dtype, tolerance in (("fp32", PACKED_TOLERANCE), ("bf16", PACKED_BF16_TOLERANCE)):
            for name in ("packed", "dense"):
                extra = {"model.dtype": dtype, "data.document_attention": True}
                extra.update({"model.attention": name, "model.transformer_engine": False})
                code, records, tail = run_job_records(
                    ranks, {**cont, **extra}, root / f"doc-{name}-{dtype}.jsonl"
                )
                runs[f"doc-{name}"] = [r["loss"] for r in records]
                label = f"doc {name} {dtype}"
                print(
                    f"{label:>17}: exit {code}, losses "
                    f"{[round(x, 4) for x in runs[f'doc-{name}']]}, median step "
                    f"{1e3 * median_step_time(records):.1f} ms"
                )
                if code:
                    print(tail)
                    ok = False
            packed, dense = runs["doc-packed"], runs["doc-dense"]
            if packed and dense:
                worst = max(abs(x - y) for x, y in zip(packed, dense))
                good = worst <= tolerance and len(packed) == 6
                print(
                    f"packed vs dense attention, {dtype}: max |diff| {worst:.2e} "
                    f"(tolerance {tolerance}): {'ok' if good else 'FAIL'}"
                )
                ok &= good
            else:
                ok = False
        fp32, bf16, ov = runs["fp32"], runs["bf16"], runs["bf16+overlap"]
        if fp32 and bf16:
            worst = max(abs(x - y) for x, y in zip(fp32, bf16))
            good = worst <= TOLERANCE and len(bf16) == 6
            print(
                f"bf16 vs fp32: max |diff| {worst:.4f} (tolerance {TOLERANCE}): {'ok' if good else 'FAIL'}"
            )
            ok &= good
        same = bool(ov) and ov == bf16
        print(f"overlap_param_gather losses equal plain bf16: {'ok' if same else 'FAIL'}")
        saved = (root / "ov" / "latest").is_file()
        print(f"overlap run saved a checkpoint: {'ok' if saved else 'FAIL'}")
        ok &= same and saved
    print("GPU path check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
