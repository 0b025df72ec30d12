"""Host memory and bytes written per rank for a checkpoint save of a 7B-shaped slice (CPU).

    python bench/checkpoint_save.py                 # 2 ranks (DP=2), 1 Llama-2-7B layer
    python bench/checkpoint_save.py --ranks 4 --layers 2 --vocab 32000

Builds a model with Llama-2-7B's layer shape (hidden 4096, FFN 11008, 32 heads) but
``--layers`` layers and a ``--vocab`` vocabulary, in bf16 with the distributed
optimizer over DP = ``--ranks`` gloo ranks (launched with torchrun), takes one optimizer
step (so Adam's moments exist), then saves it through the trainer's
``save_checkpoint`` in each optimizer format, one launch per format. Per rank it prints:

* ``own shard``: what the rank owns: its 1/DP of the fp32 master weights and both Adam
  moments (12 B/param) plus its 1/DP share of the bf16 weights (fully parallel save);
* ``written``: bytes the process wrote during the save (``wchar`` of ``/proc/self/io``);
* ``peak extra host``: the largest resident-memory increase during the save over the
  resident memory just before it (``VmRSS`` sampled every 2 ms in a thread).

``dp_reshardable`` (the default format) should write about the rank's own shard and
hold no more than that in extra host memory; ``fully_reshardable`` gathers each
parameter's optimizer state across DP in host memory before writing. A rank killed
with SIGKILL (on a workstation: the kernel's OOM killer) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GB = 2**30
SHAPE = {"hidden": 4096, "ffn": 11008, "heads": 32}  # Llama-2-7B


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s, self.peak, self._stop = interval_s, _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def worker(args) -> None:
    """One rank: build, one step, save, report as a JSON line."""
    import torch
    import torch.distributed as dist

    from megatron_lang.checkpointing.checkpoint import TrainState, save_checkpoint
    from megatron_lang.config import load_job_config
    from megatron_lang.platform import init_distributed, initialize_model_parallel, set_seed
    from megatron_lang.training import build, step

    init_distributed()
    torch.set_num_threads(1)
    cfg = load_job_config(
        None,
        [
            "model.preset=tiny-llama",
            f"model.arch.num_layers={args.layers}",
            f"model.arch.hidden_size={SHAPE['hidden']}",
            f"model.arch.ffn_hidden_size={SHAPE['ffn']}",
            f"model.arch.num_attention_heads={SHAPE['heads']}",
            f"model.arch.num_query_groups={SHAPE['heads']}",
            f"model.arch.vocab_size={args.vocab}",
            "model.arch.tie_word_embeddings=false",
            "model.dtype=bf16",
            f"data.seq_length={args.seq}",
            "data.micro_batch_size=1",
            f"data.global_batch_size={args.ranks}",
            "optimizer.use_distributed_optimizer=true",
            f"checkpoint.optimizer_format={args.format}",
        ],
    )
    src = build.resolve_model(cfg)
    initialize_model_parallel(cfg.parallel)
    set_seed(cfg.train.seed)
    config = build.transformer_config(cfg, src.arch)
    chunks = build.build_model_chunks(cfg, src, config)
    model = build.wrap_ddp(cfg, config, chunks)
    optimizer = build.build_optimizer(cfg, model)
    scheduler = build.build_scheduler(cfg, optimizer)
    n_params = sum(p.numel() for c in chunks for p in c.parameters())
    g = torch.Generator().manual_seed(dist.get_rank())
    tokens = torch.randint(0, args.vocab, (1, args.seq + 1), generator=g)
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones(1, args.seq),
        "position_ids": torch.arange(args.seq)[None],
    }
    for m in model:
        m.zero_grad_buffer()
    optimizer.zero_grad()
    step.run_schedule(model, [batch], args.seq, 0)
    optimizer.step()
    dp = dist.get_world_size()
    own = 12 * n_params / dp + 2 * n_params / dp
    state = TrainState(step=1, consumed_samples=args.ranks)
    dist.barrier()
    print(f"SAVING rank {dist.get_rank()} rss {_rss() / GB:.2f} GB", flush=True)
    before_rss, before_w = _rss(), _wchar()
    t0 = time.perf_counter()
    with PeakRss() as peak:
        save_checkpoint(
            args.out,
            state,
            model,
            optimizer,
            scheduler,
            lambda tmp: None,
            optimizer_format=args.format,
        )
    seconds = time.perf_counter() - t0
    written = _wchar() - before_w
    report = {
        "rank": dist.get_rank(),
        "params": n_params,
        "own_gb": own / GB,
        "written_gb": written / GB,
        "peak_extra_gb": (peak.peak - before_rss) / GB,
        "rss_before_gb": before_rss / GB,
        "seconds": seconds,
    }
    print("REPORT " + json.dumps(report), flush=True)
    from megatron_lang.platform import destroy_distributed

    destroy_distributed()


def launch(args, fmt: str, out: Path) -> list[dict]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={args.ranks}", __file__, "--worker", "--format", fmt,
        "--out", str(out), "--layers", str(args.layers), "--vocab", str(args.vocab),
        "--seq", str(args.seq), "--ranks", str(args.ranks),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        if "Signal 9 (SIGKILL)" in done.stderr:
            saving = [ln for ln in done.stdout.splitlines() if ln.startswith("SAVING ")]
            return saving  # killed (OOM killer, as a rule): reported by main()
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the {fmt} save failed (exit {done.returncode})")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("REPORT ")]
    return sorted((json.loads(ln[len("REPORT ") :]) for ln in lines), key=lambda r: r["rank"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2, help="data-parallel ranks (gloo)")
    p.add_argument("--layers", type=int, default=1, help="7B-shaped layers (Llama-2-7B has 32)")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary (Llama-2: 32000)")
    p.add_argument("--seq", type=int, default=64, help="tokens of the one training step")
    p.add_argument("--formats", default="dp_reshardable,fully_reshardable", help="comma-separated")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--format", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    print(
        f"7B-shaped slice: {args.layers} layer(s) of hidden {SHAPE['hidden']}, FFN "
        f"{SHAPE['ffn']}, vocab {args.vocab}; bf16, distributed optimizer, DP={args.ranks}"
    )
    for fmt in args.formats.split(","):
        with tempfile.TemporaryDirectory(prefix="mlang-ckpt-bench-") as d:
            reports = launch(args, fmt, Path(d) / "ckpt")
        if not reports or isinstance(reports[0], str):
            where = "during the save" if len(reports) == args.ranks else "before the save"
            print(
                f"\n{fmt}: a rank was killed with SIGKILL {where} -- on a machine without a "
                "scheduler that is the kernel's OOM killer (see dmesg): it needed more host "
                "memory than the machine has. Before the save: "
                + "; ".join(r.removeprefix("SAVING ") for r in reports)
            )
            continue
        print(f"\n{fmt} ({reports[0]['params'] / 1e6:.0f} M params per rank, GB = 2^30 B):")
        print("  rank  own shard  written  peak extra host  save s")
        for r in reports:
            print(
                f"  {r['rank']:>4}  {r['own_gb']:>9.2f}  {r['written_gb']:>7.2f}  "
                f"{r['peak_extra_gb']:>15.2f}  {r['seconds']:>6.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
