"""Training jobs run on spawned gloo ranks (module-level, picklable)."""

from __future__ import annotations

from megatron_lang.config import load_job_config


def base_overrides(blend: dict[str, str], **extra) -> list[str]:
    """A tiny fp32 job on the test blend; ``extra`` as ``key=value`` overrides."""
    items = {
        "model.preset": "tiny-llama",
        "model.dtype": "fp32",
        "data.blend": blend["blend"],
        "data.tokenizer": blend["tokenizer"],
        "data.seq_length": 64,
        "data.micro_batch_size": 2,
        "data.global_batch_size": 8,
        "optimizer.lr": 3e-3,
        "optimizer.min_lr": 3e-4,
        "optimizer.warmup_steps": 2,
        "train.steps": 10,
        "train.eval_steps": 2,
        "logging.level": "WARNING",
        **extra,
    }
    return [f"{k}={'null' if v is None else v}" for k, v in items.items()]


def train(overrides: list[str]) -> list[dict]:
    """Run a job with these overrides on the current ranks; return its metrics history.

    Every collective of the job is checked for tensors NCCL would refuse on GPUs
    (``tests/_collective_check.py``).
    """
    from megatron_lang.training.job import execute
    from tests._collective_check import install

    install()

    code, history = execute(load_job_config(None, overrides))
    assert code == 0
    return history


def make_start_checkpoint(blend: dict[str, str], out: str, *overrides: str) -> None:
    """Random tiny-llama weights saved at TP=1 as a start point (like a converted HF model)."""
    from megatron_lang.checkpointing.checkpoint import save_model_weights
    from megatron_lang.checkpointing.metadata import CheckpointMetadata, save_metadata
    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.training import build

    cfg = load_job_config(None, base_overrides(blend) + list(overrides))
    src = build.resolve_model(cfg)
    initialize_model_parallel(cfg.parallel)
    set_seed(cfg.train.seed)
    chunks = build.build_model_chunks(cfg, src, build.transformer_config(cfg, src.arch))

    def meta(path):
        save_metadata(path, CheckpointMetadata(src.arch, src.padded_vocab), blend["tokenizer"])

    save_model_weights(out, chunks, meta)


def document_batches(overrides: list[str]) -> dict:
    """Build the training data with document attention; report on the first micro-batch."""
    from megatron_lang.platform import initialize_model_parallel
    from megatron_lang.training import build, data

    cfg = load_job_config(None, overrides)
    src = build.resolve_model(cfg)
    initialize_model_parallel(cfg.parallel)
    td = data.build_train_data(cfg, src.tokenizer_dir)
    samples = [td.train[i] for i in range(64)]
    return {"batch": data.collate(samples), "eod": td.eod_id}


def _nan_loss(output):
    return output * float("nan")


def _nan_grad(output):
    """Identity forward, NaN backward: a finite loss with non-finite gradients."""
    import torch

    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.view_as(t)

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    return NanGrad.apply(output)


def _train_poisoned(overrides: list[str], steps: list[int], micro_per_step: int, poison):
    """Train with ``poison`` applied to the model output of the given steps.

    Returns the metrics history, or the message of the ``TrainingHalted`` error.
    """
    from megatron_lang.training import step as step_mod
    from megatron_lang.training.trainer import TrainingHalted

    original, calls = step_mod.loss_func, []

    def poisoned(loss_mask, dataset_id, n_sources, output, **kw):
        calls.append(1)
        if (len(calls) - 1) // micro_per_step + 1 in steps:
            output = poison(output)
        return original(loss_mask, dataset_id, n_sources, output, **kw)

    step_mod.loss_func = poisoned
    try:
        return train(overrides)
    except TrainingHalted as e:
        return str(e)


def train_with_nan_steps(overrides: list[str], nan_steps: list[int], micro_per_step: int):
    """Train while the loss of the given steps is NaN; return history or the halt error."""
    return _train_poisoned(overrides, nan_steps, micro_per_step, _nan_loss)


def train_with_nan_grads(overrides: list[str], nan_steps: list[int], micro_per_step: int):
    """Train while the gradients of the given steps are NaN (the loss stays finite)."""
    return _train_poisoned(overrides, nan_steps, micro_per_step, _nan_grad)


def resume_and_save(overrides: list[str]) -> int:
    """Start the job (resuming ``checkpoint.dir``'s latest) and save at once; return the step.

    The saved checkpoint holds exactly what the resume loaded (model, fp32 master
    weights, Adam moments, scheduler), in the job's optimizer format.
    """
    from megatron_lang.training.job import start_trainer
    from tests._collective_check import install

    install()
    trainer = start_trainer(load_job_config(None, overrides))
    trainer.save()
    return trainer.state.step


def first_step_grads(overrides: list[str], attentions: tuple[str, ...]) -> dict:
    """Loss report and gradients of the first global batch, once per ``model.attention``.

    The same start weights and batches for each; no optimizer step. Returns
    ``{attention: {"metrics": ..., "grads": {param name: main_grad}}}`` for this rank.
    """
    from megatron.core import parallel_state

    from megatron_lang.training import step
    from megatron_lang.training.job import start_trainer
    from tests._collective_check import install

    install()
    out = {}
    for attention in attentions:
        cfg = load_job_config(None, overrides + [f"model.attention={attention}"])
        trainer = start_trainer(cfg)
        try:
            batches, _ = trainer.prefetch.get(0)
            for m in trainer.model:
                m.zero_grad_buffer()
            report = step.run_schedule(
                trainer.model, batches, cfg.data.seq_length, len(trainer.data.source_names)
            )
            grads = {
                f"{i}.{name}": p.main_grad.detach().clone()
                for i, m in enumerate(trainer.model)
                for name, p in m.module.named_parameters()
            }
            metrics = step.summarize(report, trainer.data.source_names, objective=True)
            out[attention] = {"metrics": metrics, "grads": grads, "keys": sorted(batches[0])}
        finally:
            trainer.prefetch.close()
            parallel_state.destroy_model_parallel()
    return out


def step_one_gradients(runs: dict[str, list[str]]) -> dict:
    """Per run (name -> overrides): the first global batch's gradients as the optimizer
    sees them, and the norm the trainer logs (no optimizer step).

    Returns ``{name: {"grads": {name: grad}, "norm": ..., "metrics": ..., "batches":
    [micro-batch]}}`` for this rank (run on one rank: the whole batch).
    """
    from megatron.core import parallel_state

    from megatron_lang.training import step
    from megatron_lang.training.job import start_trainer
    from megatron_lang.training.optimizer_step import guarded_step
    from tests._collective_check import install

    install()
    out = {}
    for name, overrides in runs.items():
        cfg = load_job_config(None, overrides)
        trainer = start_trainer(cfg)
        try:
            batches, _ = trainer.prefetch.get(0)
            for m in trainer.model:
                m.zero_grad_buffer()
            trainer.optimizer.zero_grad()
            report = step.run_schedule(
                trainer.model, batches, cfg.data.seq_length, len(trainer.data.source_names)
            )
            grads = {
                n: p.main_grad.detach().clone()
                for m in trainer.model
                for n, p in m.module.named_parameters()
            }
            _, norm = guarded_step(trainer.optimizer)  # as the trainer logs it
            metrics = step.summarize(report, trainer.data.source_names, objective=True)
            out[name] = {"grads": grads, "norm": norm, "metrics": metrics, "batches": batches}
        finally:
            trainer.prefetch.close()
            parallel_state.destroy_model_parallel()
    return out
