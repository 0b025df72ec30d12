"""Trainer overhead vs a bare megatron-core loop, and data-loader throughput (CPU).

Prints:
  * median step time of ``megatron_lang``'s trainer and of a bare loop over the same
    megatron-core pieces (GPTModel, DDP, distributed optimizer, forward/backward
    schedule, same batches), and the overhead in percent (target <= 3 %). The trainer's
    step is the whole iteration of ``Trainer.train()``'s loop as it runs: stage check,
    ``train_step`` (prefetched batches, schedule, guarded optimizer step) and
    ``_after_step`` (metrics, MFU/HFU, memory stats, the console line at INFO every
    step, TensorBoard and JSONL writing, the eval/save interval checks), the async-save
    poll and the exit-signal check (an all-reduce). It is timed by wrapping the loop's
    first and last calls (``_enter_stage_for_next_step``, ``ExitSignal.requested``);
    the time inside ``train_step`` alone (the trainer's own ``step_time_s``) is printed
    too;
  * tokens/s of building micro-batches from the capped blended dataset (target
    >= 10x an 8-GPU node at ~15k tokens/s/GPU = 1.2M tokens/s).

    python bench/train_overhead.py [--steps 40] [--rounds 2] [--workdir /tmp/mlang-bench]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _overrides(data: dict[str, str], args) -> list[str]:
    return [
        "model.preset=tiny-llama",
        f"model.arch.num_layers={args.layers}",
        f"model.arch.hidden_size={args.hidden}",
        f"model.arch.ffn_hidden_size={args.hidden * 4}",
        "model.dtype=fp32",
        f"data.blend={data['blend']}",
        f"data.tokenizer={data['tokenizer']}",
        f"data.seq_length={args.seq}",
        "data.micro_batch_size=2",
        "data.global_batch_size=8",
        f"train.steps={args.steps}",
        # a real run's per-step output: console line, TensorBoard events, JSONL metrics
        "logging.level=INFO",
        "train.log_interval=1",
        f"logging.tensorboard_dir={os.path.join(args.workdir, 'tb')}",
        f"logging.metrics_file={os.path.join(args.workdir, 'metrics.jsonl')}",
    ]


def trainer_loop(cfg) -> tuple[list[float], list[float]]:
    """Run the job through ``execute``; return the whole-iteration times of
    ``Trainer.train()``'s loop and the trainer's own ``step_time_s`` (``train_step`` only).

    An iteration starts when the loop calls ``_enter_stage_for_next_step`` and ends when
    its ``ExitSignal.requested()`` check returns (the loop's first and last calls), so it
    includes ``train_step``, ``_after_step`` and the async-save poll; trainer.py is not
    changed, the two methods are wrapped for the run.
    """
    from megatron_lang.training.job import execute
    from megatron_lang.training.signals import ExitSignal
    from megatron_lang.training.trainer import Trainer

    starts: list[float] = []
    ends: list[float] = []
    enter, requested = Trainer._enter_stage_for_next_step, ExitSignal.requested

    def timed_enter(self):
        starts.append(time.perf_counter())
        return enter(self)

    def timed_requested(self):
        out = requested(self)
        ends.append(time.perf_counter())
        return out

    Trainer._enter_stage_for_next_step = timed_enter
    ExitSignal.requested = timed_requested
    try:
        _, history = execute(cfg)
    finally:
        Trainer._enter_stage_for_next_step, ExitSignal.requested = enter, requested
    assert len(starts) == len(ends) == cfg.train.steps, (len(starts), len(ends))
    inner = [h["step_time_s"] for h in history if "step_time_s" in h]
    return [e - s for s, e in zip(starts, ends, strict=True)], inner


def bare_loop(cfg, steps: int) -> list[float]:
    """The same job without our trainer: megatron-core pieces and a plain loop."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_lang.platform import (
        destroy_distributed,
        init_distributed,
        initialize_model_parallel,
        set_seed,
    )
    from megatron_lang.training import build, data

    init_distributed()
    src = build.resolve_model(cfg)
    initialize_model_parallel(cfg.parallel)
    set_seed(cfg.train.seed)
    config = build.transformer_config(cfg, src.arch)
    model = build.wrap_ddp(cfg, config, build.build_model_chunks(cfg, src, config))
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = model[0].no_sync
    optimizer = build.build_optimizer(cfg, model)
    td = data.build_train_data(cfg, src.tokenizer_dir)
    d = cfg.data

    def forward_step(it, m):
        b = next(it)
        out = m(b["tokens"], b["position_ids"], None, labels=b["labels"])
        mask = b["loss_mask"].float()

        def loss(o):
            s = (o.float() * mask).sum()
            return s, mask.sum().int(), {"loss": s.detach()}

        return out, loss

    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        batches = data.step_microbatches(
            td.train, s * d.global_batch_size, d.global_batch_size, d.micro_batch_size, 0, 1
        )
        model[0].zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter(batches),
            model=model,
            num_microbatches=len(batches),
            seq_length=d.seq_length,
            micro_batch_size=d.micro_batch_size,
        )
        optimizer.step()
        times.append(time.perf_counter() - t0)
    destroy_distributed()
    return times


def loader_throughput(dataset, seq: int, seconds: float = 3.0) -> float:
    """Tokens/s of building micro-batches (global batch 64, micro 4) from ``dataset``."""
    from megatron_lang.training.data import step_microbatches

    tokens, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        first = (i * 64) % max(1, len(dataset) - 64)
        for b in step_microbatches(dataset, first, 64, 4, 0, 1):
            tokens += b["tokens"].numel()
        i += 1
    return tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="trainer/bare runs, alternated")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("MASTER_PORT", "29517")

    from megatron_lang.config import load_job_config
    from megatron_lang.data.demo import build_demo_data

    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mlang-bench-")
    data = build_demo_data(args.workdir, docs_per_language=None, max_epochs=1000)
    cfg = load_job_config(None, _overrides(data, args))

    warm, rounds = args.steps // 4, []
    for r in range(args.rounds):  # trainer, bare, trainer, bare, ...: load bursts hit both
        ours, inner = trainer_loop(cfg if r == 0 else load_job_config(None, _overrides(data, args)))
        bare = bare_loop(load_job_config(None, _overrides(data, args)), args.steps)
        after = [o - i for o, i in zip(ours[warm:], inner[warm:], strict=True)]
        rounds.append(
            [statistics.median(x[warm:]) for x in (ours, bare, inner)] + [statistics.median(after)]
        )
        print(
            f"round {r + 1}: trainer {rounds[-1][0] * 1e3:.1f} ms | bare {rounds[-1][1] * 1e3:.1f} "
            "ms (medians)",
            flush=True,
        )
    # the least disturbed round's figure of each loop (a shared CPU only adds time)
    m_ours, m_bare, m_inner, m_after = (min(r[i] for r in rounds) for i in range(4))
    print(
        f"model: tiny-llama {args.layers} layers, hidden {args.hidden}, seq {args.seq}, "
        f"global batch 8 (micro 2), fp32, 1 rank on CPU, {args.steps} steps (first {warm} "
        f"excluded), best of {args.rounds} alternated rounds"
    )
    print(
        f"median step: trainer (whole loop iteration) {m_ours * 1e3:.1f} ms | bare "
        f"megatron-core loop {m_bare * 1e3:.1f} ms | overhead "
        f"{100 * (m_ours / m_bare - 1):+.1f} % (target <= 3 %)"
    )
    print(
        f"  of which inside train_step {m_inner * 1e3:.1f} ms "
        f"({100 * (m_inner / m_bare - 1):+.1f} % vs bare); after it (metrics, logging, "
        f"TensorBoard/JSONL, eval/save checks, signal check) {m_after * 1e3:.1f} ms"
    )

    from megatron_lang.training.data import build_train_data

    for seq in (2048, 4096):
        # the training data path, with 4000 samples of `seq` tokens
        job = load_job_config(
            None,
            _overrides(data, args)
            + [f"data.seq_length={seq}", "train.steps=500", "data.global_batch_size=8"],
        )
        ds = build_train_data(job, data["tokenizer"]).train
        tps = loader_throughput(ds, seq)
        print(
            f"data loader, seq {seq}: {tps / 1e6:.2f} M tokens/s per rank "
            f"({tps / 120e3:.0f}x an 8-GPU node at 15k tokens/s/GPU; target >= 10x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
