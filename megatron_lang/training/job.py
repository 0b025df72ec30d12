"""Start a training job: process groups, layout, seed, :class:`Trainer`; and the dry run."""

from __future__ import annotations

import os

from megatron_lang.config import JobConfig, dump_yaml
from megatron_lang.platform.logging import get_logger, setup_logging
from megatron_lang.training import build

log = get_logger(__name__)


def world_size_from_env(env=None) -> int:
    """World size a launcher announces (torchrun, SLURM), else 1."""
    env = os.environ if env is None else env
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if key in env:
            return int(env[key])
    return 1


def describe(cfg: JobConfig, world_size: int) -> str:
    """Resolved config + the parallel layout and batch arithmetic, as text.

    Raises:
        StartupError / ParallelConfigError: the layout or batch does not divide.
    """
    src = build.resolve_model(cfg)
    info = build.check_startup(cfg, src.arch, world_size, hardware=False)
    d, a = cfg.data, src.arch
    lines = [
        dump_yaml(cfg).rstrip(),
        "",
        f"model: {a.num_layers} layers, hidden {a.hidden_size}, heads {a.num_attention_heads} "
        f"(KV groups {a.num_query_groups}), ffn {a.ffn_hidden_size}, vocab {a.vocab_size} "
        f"(padded {src.padded_vocab}), {'checkpoint ' + src.checkpoint if src.checkpoint else 'preset ' + str(cfg.model.preset)}",
        f"layout: {cfg.parallel.describe(world_size)}",
        f"batch: global {d.global_batch_size} = micro {d.micro_batch_size} x DP {info['dp']} "
        f"x gradient accumulation {info['grad_accum']}; {d.global_batch_size * d.seq_length} tokens/step, "
        f"{cfg.train.steps * d.global_batch_size * d.seq_length:.3g} tokens in {cfg.train.steps} steps",
    ]
    return "\n".join(lines)


def run(cfg: JobConfig) -> int:
    """Run the job in this process (one rank of a torchrun/SLURM launch); return the exit code."""
    return execute(cfg)[0]


def execute(cfg: JobConfig) -> tuple[int, list[dict[str, float]]]:
    """Run the job; return the exit code and the per-step metrics history."""
    from megatron_lang.platform import (
        destroy_distributed,
        init_distributed,
        initialize_model_parallel,
        set_seed,
    )
    from megatron_lang.training.trainer import Trainer

    setup_logging(cfg.logging.level)
    env = init_distributed()
    try:
        src = build.resolve_model(cfg)
        build.check_startup(cfg, src.arch, env.world_size)
        a = src.arch
        initialize_model_parallel(
            cfg.parallel,
            a.num_layers,
            a.num_attention_heads,
            a.num_query_groups,
            cfg.data.seq_length,
        )
        set_seed(cfg.train.seed)
        log.info("job:\n%s", describe(cfg, env.world_size))
        trainer = Trainer(cfg, src)
        return trainer.train(), trainer.history
    finally:
        destroy_distributed()
