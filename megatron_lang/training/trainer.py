"""The training job: set-up, the step loop, evaluation, checkpoints, logging.

The loop itself (:meth:`Trainer.train`) is short; building, checkpointing,
evaluation and logging live in their own modules and methods.
"""

from __future__ import annotations

import gc
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from megatron_lang.checkpointing import checkpoint as ckpt
from megatron_lang.config import JobConfig, dump_yaml
from megatron_lang.platform.distributed import collective_tensor
from megatron_lang.platform.logging import get_logger
from megatron_lang.platform.seed import preserved_rng_states
from megatron_lang.training import build, data, stages, step
from megatron_lang.training.optimizer_step import guarded_step, stale_master_weights
from megatron_lang.training.signals import ExitSignal

log = get_logger(__name__)


class TrainingHalted(RuntimeError):
    """The run stopped itself (too many non-finite losses)."""


class Trainer:
    """Holds a job's model, optimizer, data and state; :meth:`train` runs it.

    ``torch.distributed`` and the model-parallel groups must be initialised
    (see :func:`megatron_lang.training.job.run`).
    """

    def __init__(self, cfg: JobConfig, src: build.ModelSource):
        from megatron.core import parallel_state as ps

        self.cfg, self.src = cfg, src
        world = torch.distributed.get_world_size()
        self.layout = {**asdict(cfg.parallel), "world_size": world}
        self.dp_rank, self.dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.is_logger = torch.distributed.get_rank() == 0
        self.config = build.transformer_config(cfg, src.arch)
        self.stages = stages.resolve_stages(cfg)
        self.state = ckpt.TrainState(
            layout=self.layout, ddp_bucket_size=cfg.optimizer.ddp_bucket_size
        )
        self._last_saved_step: int | None = None  # same on every rank (no file-system checks)
        self._last_eval_step: int | None = None
        latest = self._latest_checkpoint()
        first = ckpt.read_train_state(latest).stage if latest else 0
        if not 0 <= first < len(self.stages):
            raise stages.StageError(
                f"{latest} was written in stage {first}, but the job has {len(self.stages)} stages"
            )
        # Weights go into the model before DDP and the optimizer are built: megatron-core's
        # mixed-precision optimizers copy their fp32 master weights from the model when
        # they are built, and the first step writes those masters back into the model.
        self._build_stage(self.stages[first], checkpoint=None if latest else src.checkpoint)
        if latest is not None:
            self._resume(latest)
        self._check_master_weights()
        self.data = data.build_train_data(cfg, src.tokenizer_dir)
        d = cfg.data
        self.prefetch = data.Prefetcher(
            self.data.train, d.global_batch_size, d.micro_batch_size, self.dp_rank, self.dp_size
        )
        self.flops_per_step = self._flops()
        from megatron_lang.training.metrics import MetricsWriter

        self.writer = MetricsWriter(
            cfg.logging.tensorboard_dir, enabled=self.is_logger, purge_step=self.state.step or None
        )
        self.history: list[dict[str, float]] = []
        self._async_saves = None
        if cfg.checkpoint.async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._async_saves = AsyncCallsQueue()
        self._metrics_file = None
        if self.is_logger and cfg.logging.metrics_file:
            Path(cfg.logging.metrics_file).parent.mkdir(parents=True, exist_ok=True)
            self._metrics_file = open(cfg.logging.metrics_file, "a")  # noqa: SIM115

    # ----------------------------------------------------------------- set-up
    def _connect_schedule_hooks(self) -> None:
        from megatron.core.distributed import finalize_model_grads

        self.config.finalize_model_grads_func = finalize_model_grads
        no_sync = [m.no_sync for m in self.model]
        self.config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
        if self.cfg.optimizer.overlap_grad_reduce:
            sync = [m.start_grad_sync for m in self.model]
            self.config.grad_sync_func = sync[0] if len(sync) == 1 else sync

    def _build_stage(
        self,
        stage: stages.Stage,
        weights: list[dict] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        """Model chunks, DDP, optimizer and scheduler for ``stage``.

        megatron-core's DDP and optimizers read ``requires_grad`` when they are
        built, so a stage change builds all of them anew; ``weights`` (the previous
        chunks' state dicts) are copied in. ``checkpoint``: load these weights (a
        converted model, the LoRA base) first. Either way the weights are in the
        model before the optimizer copies its fp32 master weights from it.
        """
        # megatron-core sets the tensor-parallel attributes of its weights (which the
        # gradient norm and clipping read) only while initialising them, so the
        # weights are initialised and then overwritten; the generators are left as
        # they were, so a run that changes stage matches one resumed across the change.
        with preserved_rng_states() if weights is not None else nullcontext():
            chunks = build.build_model_chunks(stage.cfg, self.src, self.config)
        for chunk, sd in zip(chunks, weights or []):
            chunk.load_state_dict(sd)
        if checkpoint:
            ckpt.load_model_weights(checkpoint, chunks)
        counts = stages.apply_trainable(chunks, stage, self.src.arch.tie_word_embeddings)
        self._check_stage_matches(stage, counts)
        self.model = build.wrap_ddp(stage.cfg, self.config, chunks)
        self._connect_schedule_hooks()
        self.optimizer = build.build_optimizer(stage.cfg, self.model)
        self.scheduler = build.build_scheduler(stage.cfg, self.optimizer)
        self.stage = stage
        self.state.stage = stage.index
        if len(self.stages) > 1:
            log.info(
                "stage %d/%d %r: steps %d-%d, trainable %s (%d parameters on rank 0, %d frozen), "
                "lr %g (%s)",
                stage.index + 1,
                len(self.stages),
                stage.name,
                stage.start + 1,
                stage.end,
                ", ".join(stage.trainable),
                counts["trainable"],
                counts["frozen"],
                stage.cfg.optimizer.lr,
                stage.cfg.optimizer.schedule,
            )

    def _check_stage_matches(self, stage: stages.Stage, counts: dict[str, int]) -> None:
        """Every trainable rule matches a parameter on some rank (a typo freezes nothing silently)."""
        total = collective_tensor([counts["trainable"]], dtype=torch.float64)
        torch.distributed.all_reduce(total)
        if total.item() == 0:
            raise stages.StageError(
                f"stage {stage.index} ({stage.name!r}): trainable={list(stage.trainable)} "
                f"matches no parameter; groups: {sorted(stages.GROUPS)} or glob patterns over "
                "names such as decoder.layers.*.mlp.linear_fc1.weight"
            )

    def _enter_stage_for_next_step(self) -> None:
        """Switch to the stage of the next step when it differs (weights carried over)."""
        nxt = stages.stage_for_step(self.stages, self.state.step)
        if nxt.index == self.stage.index:
            return
        self.sync_params()
        # host copies: the old model, its gradient buffers and optimizer state leave the
        # GPU before the new stage's are built (peak memory: one model, not two)
        weights = [
            {
                k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                for k, v in _unwrap(m).state_dict().items()
            }
            for m in self.model
        ]
        del self.model, self.optimizer, self.scheduler
        self.config.finalize_model_grads_func = self.config.no_sync_func = None
        self.config.grad_sync_func = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._build_stage(nxt, weights)
        del weights
        self._check_master_weights()

    def _latest_checkpoint(self) -> Path | None:
        c = self.cfg.checkpoint
        if not c.dir:
            return None
        ckpt.remove_incomplete(c.dir)
        return ckpt.latest_checkpoint(c.dir) if c.resume else None

    def _resume(self, latest: Path) -> None:
        """Model, optimizer (with its fp32 master weights), scheduler and state of ``latest``."""
        self.state = ckpt.load_checkpoint(
            latest, self.model, self.optimizer, self.scheduler, self.layout
        )
        self.state.layout = self.layout
        self.state.ddp_bucket_size = self.cfg.optimizer.ddp_bucket_size
        self._last_saved_step = self.state.step

    def _check_master_weights(self) -> None:
        """The optimizer's master weights are the model's weights (mixed precision).

        A weight loaded into the model after the optimizer copied its masters would
        be overwritten by the first step (the pretrained model silently replaced by
        its random initialisation). Cheap: one comparison per parameter shard.
        """
        bad = stale_master_weights(self.optimizer)
        if bad:
            raise RuntimeError(
                f"the optimizer's fp32 master weights differ from the model's for {len(bad)} "
                f"parameters (e.g. {bad[:3]}): weights were loaded after the optimizer was "
                "built without optimizer.reload_model_params()"
            )

    def sync_params(self) -> None:
        """Make every rank's model weights current (before saving, exporting or reading them).

        With ``optimizer.overlap_param_gather`` the distributed optimizer all-gathers the
        updated weights only in the next forward's pre-hooks: until then every shard but
        this rank's own is one step old. Megatron-LM and Megatron-Bridge force the same
        synchronous gather before a save.
        """
        if self.stage.cfg.optimizer.overlap_param_gather:
            for m in self.model:
                m.start_param_sync(force_sync=True)

    def _flops(self):
        """Model FLOPs (for MFU) and hardware FLOPs (recompute included, for HFU) per step."""
        from megatron_lang.training.flops import step_flops

        d = self.cfg.data
        return step_flops(
            self.src.arch,
            d.seq_length,
            d.global_batch_size,
            recompute=self.cfg.model.recompute,
            padded_vocab=self.src.padded_vocab,
        )

    # ------------------------------------------------------------------- loop
    def train(self) -> int:
        """Run until ``train.steps`` or an exit signal; return the process exit code (0)."""
        cfg = self.cfg
        signals = ExitSignal(cfg.checkpoint.exit_signals)
        try:
            if cfg.train.eval_at_start and self.state.step == 0:
                self.evaluate()
            while self.state.step < cfg.train.steps:
                self._enter_stage_for_next_step()
                metrics = self.train_step()
                self._after_step(metrics)
                if self._async_saves is not None:
                    self._async_saves.maybe_finalize_async_calls(blocking=False)
                if signals.requested():
                    self.save()
                    return 0
            if self._last_eval_step != self.state.step:  # not just done by eval_interval
                self.evaluate()
            if cfg.checkpoint.dir and self._last_saved_step != self.state.step:
                self.save()
            return 0
        finally:
            self.prefetch.close()
            if self._async_saves is not None:
                self._async_saves.maybe_finalize_async_calls(blocking=True)
            signals.restore()
            self.writer.close()
            if self._metrics_file:
                self._metrics_file.close()

    def _record(self, values: dict[str, float]) -> None:
        self.history.append(values)
        if self._metrics_file:
            self._metrics_file.write(json.dumps(values) + "\n")
            self._metrics_file.flush()

    def train_step(self) -> dict[str, float]:
        """One optimizer step over the next global batch (skipped on a non-finite loss or gradient)."""
        d, t0 = self.cfg.data, time.perf_counter()
        batches, data_wait = self.prefetch.get(self.state.consumed_samples)
        for m in self.model:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        report = step.run_schedule(self.model, batches, d.seq_length, len(self.data.source_names))
        metrics = step.summarize(
            report, self.data.source_names, objective=self.cfg.objective.enabled
        )
        self.state.step += 1
        self.state.consumed_samples += d.global_batch_size
        applied, why = False, f"loss is {metrics['loss']}"
        if math.isfinite(metrics["loss"]):
            applied, grad_norm = guarded_step(self.optimizer)
            metrics["grad_norm"] = grad_norm
            why = f"gradient norm is {grad_norm}"
        if applied:
            self.scheduler.step(1)
        else:
            self.state.skipped_steps += 1
            log.warning("step %d: %s, step skipped", self.state.step, why)
            if self.state.skipped_steps > self.cfg.train.max_skipped_steps:
                raise TrainingHalted(
                    f"{self.state.skipped_steps} steps skipped for a non-finite loss or "
                    f"gradient (train.max_skipped_steps={self.cfg.train.max_skipped_steps}); "
                    f"last: step {self.state.step}, {why}"
                )
        metrics["step_time_s"] = time.perf_counter() - t0
        metrics["data_wait_s"] = data_wait
        return metrics

    def _after_step(self, metrics: dict[str, float]) -> None:
        from megatron_lang.training.flops import achieved_tflops_per_gpu, hfu, mfu, peak_tflops
        from megatron_lang.training.metrics import format_console_line, memory_stats

        cfg, s = self.cfg, self.state.step
        dt = metrics.pop("step_time_s")
        world = self.layout["world_size"]
        tflops = achieved_tflops_per_gpu(self.flops_per_step.model, dt, world)
        hw_tflops = achieved_tflops_per_gpu(self.flops_per_step.hardware, dt, world)
        peak = peak_tflops(dtype="fp8" if cfg.model.fp8 else "bf16")
        values = {
            **metrics,
            "lr": self.optimizer.param_groups[0]["lr"],
            "stage": self.stage.index,
            "skipped_steps": self.state.skipped_steps,
            "tokens_per_s": cfg.data.global_batch_size * cfg.data.seq_length / dt,
            "tflops_per_gpu": tflops,
            "mfu": mfu(tflops, peak),
            "hfu": hfu(hw_tflops, peak),
            "step_time_s": dt,
            **memory_stats(),
        }
        values.pop("tokens", None)
        self._record({"step": s, **values})
        if self.is_logger:
            self.writer.train_step(s, values)
            if s % cfg.train.log_interval == 0 or s == cfg.train.steps:
                log.info(format_console_line(s, cfg.train.steps, values))
        if cfg.train.eval_interval and s % cfg.train.eval_interval == 0:
            self.evaluate()
        stage_done = s == self.stage.end and s < cfg.train.steps
        if (cfg.checkpoint.save_interval and s % cfg.checkpoint.save_interval == 0) or (
            stage_done and cfg.checkpoint.dir
        ):
            self.save()

    # --------------------------------------------------------- eval and save
    def evaluate(self) -> dict[str, float]:
        """Loss and perplexity on each validation set (one per source/language)."""
        self._last_eval_step = self.state.step
        d, results = self.cfg.data, {}
        per_step = d.global_batch_size
        overlap = self.stage.cfg.optimizer.overlap_param_gather
        for m in self.model:
            m.eval()
            if overlap:  # current weights, and no gathers left pending by eval forwards
                m.disable_forward_pre_hook(param_sync=True)
        try:
            for name, ds in self.data.valid.items():
                steps = min(self.cfg.train.eval_steps, len(ds) // per_step)
                if getattr(ds, "padded", False) and steps * per_step < ds.samples:
                    log.warning(
                        "validation set %s: train.eval_steps=%d covers %d of its %d samples",
                        name, steps, steps * per_step, ds.samples,
                    )  # fmt: skip
                if steps == 0:
                    log.warning(
                        "validation set %s has fewer than %d samples: skipped", name, per_step
                    )
                    continue
                total = None
                with torch.no_grad():
                    for i in range(steps):
                        batches = data.step_microbatches(
                            ds,
                            i * per_step,
                            per_step,
                            d.micro_batch_size,
                            self.dp_rank,
                            self.dp_size,
                        )
                        for b in batches:  # validation sets are single-source
                            b.pop("dataset_id", None)
                        r = step.run_schedule(
                            self.model, batches, d.seq_length, 0, forward_only=True
                        )
                        total = r if total is None else total + r
                loss = float(total[0] / total[1])
                results[f"{name}/loss"] = loss
                results[f"{name}/ppl"] = math.exp(min(loss, 50.0))
        finally:
            for m in self.model:
                m.train()
                if overlap:
                    m.enable_forward_pre_hook()
        if results:
            self._record({"step": self.state.step, **{f"valid/{k}": v for k, v in results.items()}})
        if results and self.is_logger:
            for name in self.data.valid:
                if f"{name}/loss" in results:
                    self.writer.scalars(
                        self.state.step,
                        {"loss": results[f"{name}/loss"], "ppl": results[f"{name}/ppl"]},
                        prefix=f"val/{name}",
                    )
            log.info(
                "validation at step %d: %s",
                self.state.step,
                ", ".join(f"{k} {v:.4f}" for k, v in results.items()),
            )
        return results

    def save(self) -> Path | None:
        """Checkpoint the run now (no-op without ``checkpoint.dir``)."""
        c = self.cfg.checkpoint
        if not c.dir:
            log.warning("checkpoint.dir is not set: nothing saved")
            return None
        if self._async_saves is not None:  # one background save at a time
            self._async_saves.maybe_finalize_async_calls(blocking=True)
        self._last_saved_step = self.state.step
        self.sync_params()
        return ckpt.save_checkpoint(
            c.dir,
            self.state,
            self.model,
            self.optimizer,
            self.scheduler,
            self._write_metadata,
            keep_last=c.keep_last,
            async_queue=self._async_saves,
            optimizer_format=c.optimizer_format,
        )

    def _write_metadata(self, path: Path) -> None:
        from megatron_lang.checkpointing.metadata import (
            TOKENIZER_DIR,
            CheckpointMetadata,
            save_metadata,
        )
        from megatron_lang.training.lora import metadata as lora_metadata

        chat = chat_export(self.cfg, self.src.generation_config)
        meta = CheckpointMetadata(
            arch=self.src.arch,
            generation_config=chat["generation_config"] if chat else self.src.generation_config,
            padded_vocab_size=self.src.padded_vocab,
            dtype={"bf16": "bfloat16", "fp32": "float32"}[self.cfg.model.dtype],
            hf_config=self.src.hf_config,
            source=self.src.checkpoint or f"preset:{self.cfg.model.preset}",
            extra={
                "step": self.state.step,
                "consumed_samples": self.state.consumed_samples,
                **({"lora": lora_metadata(self.cfg.lora)} if self.cfg.lora.enabled else {}),
            },
        )
        save_metadata(path, meta, tokenizer_dir=self.src.tokenizer_dir)
        if chat:
            write_chat_template(path / TOKENIZER_DIR, chat["template"])
        (path / "job.yaml").write_text(dump_yaml(self.cfg))


def chat_export(cfg: JobConfig, generation_config: dict | None) -> dict | None:
    """For a chat run: the template it trained on and a generation config that stops at the
    end-of-turn token (first in ``eos_token_id``, the tokenizer's EOS kept after it)."""
    if not cfg.data.chat:
        return None
    from megatron_lang.data.chat.dataset import read_report

    report = read_report(cfg.data.chat)
    eot = int(report["end_of_turn"]["id"])
    gen = dict(generation_config or {})
    old = gen.get("eos_token_id")
    old = [] if old is None else old if isinstance(old, list) else [old]
    gen["eos_token_id"] = [eot] + [int(e) for e in old if int(e) != eot]
    return {"template": report["template"]["jinja"], "generation_config": gen}


def write_chat_template(tokenizer_dir: Path, template: str) -> None:
    """``chat_template.jinja`` beside the tokenizer files (and no other template left in
    ``tokenizer_config.json``), so ``apply_chat_template`` renders what was trained."""
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    config = tokenizer_dir / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "chat_template" in data:
            del data["chat_template"]
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _unwrap(chunk):
    return getattr(chunk, "module", chunk)
