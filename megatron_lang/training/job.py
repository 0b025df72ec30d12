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


def describe(cfg: JobConfig, world_size: int, assume_cuda_te: bool = False) -> str:
    """Resolved config + the parallel layout, batch arithmetic and stages, as text.

    Args:
        cfg: the job.
        world_size: ranks to check the layout against.
        assume_cuda_te: also run the machine checks as on a CUDA node with
            TransformerEngine (see :func:`~megatron_lang.training.build.check_startup`)
            and name the layer spec the job gets there.

    Raises:
        StartupError / ParallelConfigError: the layout or batch does not divide.
    """
    from megatron_lang.training.stages import resolve_stages

    src = build.resolve_model(cfg)
    info = build.check_startup(
        cfg, src.arch, world_size, hardware=False, assume_cuda_te=assume_cuda_te
    )
    d, a = cfg.data, src.arch
    tokens_per_step = d.global_batch_size * d.seq_length
    lines = [
        dump_yaml(cfg).rstrip(),
        "",
        f"model: {a.num_layers} layers, hidden {a.hidden_size}, heads {a.num_attention_heads} "
        f"(KV groups {a.num_query_groups}), ffn {a.ffn_hidden_size}, vocab {a.vocab_size} "
        f"(padded {src.padded_vocab}), {'checkpoint ' + src.checkpoint if src.checkpoint else 'preset ' + str(cfg.model.preset)}",
        f"layout: {cfg.parallel.describe(world_size)}",
        f"batch: global {d.global_batch_size} = micro {d.micro_batch_size} x DP {info['dp']} "
        f"x gradient accumulation {info['grad_accum']}; {tokens_per_step} tokens/step, "
        f"{cfg.train.steps * tokens_per_step:.3g} tokens in {cfg.train.steps} steps",
    ]
    for st in resolve_stages(cfg):
        o = st.cfg.optimizer
        lines.append(
            f"stage {st.index} {st.name!r}: steps {st.start + 1}-{st.end} ({st.steps} steps, "
            f"{st.steps * tokens_per_step:.4g} tokens), trainable {', '.join(st.trainable)}, "
            f"lr {o.lr:g} {o.schedule}"
            + ("" if o.schedule == "constant" else f" (warmup {o.warmup_steps}, min {o.min_lr:g})")
        )
    ob = cfg.objective
    if d.chat:
        lines.append(chat_summary(cfg))
    elif ob.enabled:
        kind = (
            "bidirectional" if ob.bidirectional else f"hybrid, mntp_fraction {ob.mntp_fraction:g}"
        )
        lines.append(f"objective: causal + MNTP ({kind}, mask_ratio {ob.mask_ratio:.4g})")
    else:
        lines.append("objective: causal LM")
    lc = cfg.lora
    if lc.enabled:
        lines.append(
            f"lora: rank {lc.rank}, alpha {lc.alpha:g}, dropout {lc.dropout:g}, "
            f"targets {', '.join(lc.target_modules)}"
        )
    if assume_cuda_te:
        lines.append(f"layer spec on CUDA+TE: {build.layer_spec_summary(cfg, te=True)}")
    from megatron_lang.training.memory import estimate_memory

    lines.append(estimate_memory(cfg, a, src.padded_vocab, world_size).table())
    return "\n".join(lines)


def chat_summary(cfg: JobConfig) -> str:
    """The dry run's line on an instruction-tuning job's data."""
    from pathlib import Path

    from megatron_lang.data.chat.dataset import read_report

    d = cfg.data
    if not Path(d.chat).exists():
        return (
            f"objective: instruction tuning (answer tokens of {d.chat}: not built yet, so "
            f"train.steps={cfg.train.steps} is taken as given; train.epochs counts it from "
            "the data at the start)"
        )
    r = read_report(d.chat)
    epochs = cfg.train.steps * d.global_batch_size / r["packing"]["samples"]
    return (
        f"objective: instruction tuning (loss mode {r['loss_mode']}, template "
        f"{r['template']['name']}): {r['conversations']['kept']} conversations in "
        f"{r['packing']['samples']} samples (packing {100 * r['packing']['efficiency']:.1f} %), "
        f"{r['tokens']['trained']} trained tokens per epoch, {epochs:.3g} epochs"
    )


def run(cfg: JobConfig) -> int:
    """Run the job in this process (one rank of a torchrun/SLURM launch); return the exit code."""
    return execute(cfg)[0]


def execute(cfg: JobConfig) -> tuple[int, list[dict[str, float]]]:
    """Run the job; return the exit code and the per-step metrics history."""
    from megatron_lang.platform import destroy_distributed, init_distributed

    setup_logging(cfg.logging.level)
    init_distributed()
    try:
        trainer = start_trainer(cfg)
        return trainer.train(), trainer.history
    finally:
        destroy_distributed()


def start_trainer(cfg: JobConfig):
    """Checks, model-parallel groups, seed and the :class:`Trainer` (built, resumed) of ``cfg``.

    ``torch.distributed`` must be initialised; the caller runs ``train()`` (or saves).
    """
    import torch.distributed as dist

    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.training.trainer import Trainer

    world = dist.get_world_size()
    src = build.resolve_model(cfg)
    build.check_startup(cfg, src.arch, world)
    a = src.arch
    initialize_model_parallel(
        cfg.parallel, a.num_layers, a.num_attention_heads, a.num_query_groups, cfg.data.seq_length
    )
    set_seed(cfg.train.seed)
    log.info("job:\n%s", describe(cfg, world))
    return Trainer(cfg, src)
