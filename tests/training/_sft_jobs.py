"""Instruction-tuning test jobs run on spawned gloo ranks (module-level, picklable)."""

from __future__ import annotations

import torch

from megatron_lang.config import load_job_config


def sft_overrides(chat: dict[str, str], **extra) -> list[str]:
    """tiny-llama (SmolLM2's vocabulary) fp32 on the test chat data; ``extra`` overrides."""
    items = {
        "model.preset": "tiny-llama",
        "model.arch.vocab_size": 49152,
        "model.dtype": "fp32",
        "data.chat": chat["train"],
        "data.chat_valid": chat["valid"],
        "data.tokenizer": chat["tokenizer"],
        "data.seq_length": 256,
        "data.micro_batch_size": 2,
        "data.global_batch_size": 8,
        "optimizer.lr": 3e-3,
        "optimizer.schedule": "constant",
        "train.steps": 6,
        "train.eval_steps": 2,
        "logging.level": "WARNING",
        **extra,
    }
    return [f"{k}={'null' if v is None else v}" for k, v in items.items()]


def _packed_logits(model, batch: dict, vocab: int) -> torch.Tensor | None:
    """Full-vocabulary logits ``[b*S, vocab]`` of a packed micro-batch (last stage), like
    :func:`megatron_lang.conversion.megatron_model.forward_logits` with packed params."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from megatron_lang.models.packed_attention import packed_seq_params

    tokens = batch["tokens"].reshape(1, -1)
    n = tokens.shape[1]
    if ps.get_pipeline_model_parallel_world_size() > 1 and not ps.is_pipeline_first_stage():
        from megatron_lang.platform.distributed import collective_device

        hidden = torch.empty(
            (n, 1, model.config.hidden_size),
            dtype=model.config.params_dtype,
            device=collective_device(),
        )
        dist.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden)
    out = model(
        tokens,
        batch["position_ids"].reshape(1, -1),
        None,
        packed_seq_params=packed_seq_params(batch),
    )
    if not ps.is_pipeline_last_stage():
        dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        return None
    return gather_from_tensor_model_parallel_region(out)[0, :, :vocab].float()


def packed_vs_alone(overrides: list[str], n_items: int = 2) -> list[float] | None:
    """Max |logit difference| between each conversation inside packed items and the same
    conversation run alone (plain causal forward), for the first ``n_items`` items.

    Also checks the items' segments: one per conversation, padding its own."""
    from megatron.core import parallel_state as ps

    from megatron_lang.conversion.megatron_model import forward_logits
    from megatron_lang.training.data import collate
    from megatron_lang.training.job import start_trainer
    from tests._collective_check import install

    install()
    cfg = load_job_config(None, overrides)
    trainer = start_trainer(cfg)
    vocab = trainer.src.arch.vocab_size
    try:
        model = trainer.model[0].module
        model.eval()
        diffs = []
        with torch.no_grad():
            for i in range(n_items):
                item = trainer.data.train[i]
                packed = _packed_logits(model, collate([item]), vocab)
                seg = item["segments"]
                n_conv = int(seg.max())  # the last segment is the padding
                assert n_conv >= 2, "the test needs packed samples of several conversations"
                for k in range(n_conv):
                    where = torch.nonzero(seg == k).squeeze(1)
                    alone = forward_logits(model, item["tokens"][where].unsqueeze(0), vocab)
                    if packed is not None:
                        diffs.append(float((packed[where] - alone[0]).abs().max()))
        return (
            diffs
            if ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
            else None
        )
    finally:
        trainer.prefetch.close()
        ps.destroy_model_parallel()


def first_step(overrides: list[str]) -> dict:
    """Loss report and every parameter's gradient for the first global batch (no step)."""
    from megatron.core import parallel_state as ps

    from megatron_lang.training import step
    from megatron_lang.training.job import start_trainer

    cfg = load_job_config(None, overrides)
    trainer = start_trainer(cfg)
    try:
        batches, _ = trainer.prefetch.get(0)
        for m in trainer.model:
            m.zero_grad_buffer()
        report = step.run_schedule(trainer.model, batches, cfg.data.seq_length, 1)
        grads = {
            name: p.main_grad.detach().clone()
            for m in trainer.model
            for name, p in m.module.named_parameters()
        }
        tokens = [float(b["loss_mask"].sum()) for b in batches]
        return {"metrics": step.summarize(report, ["chat"]), "grads": grads, "tokens": tokens}
    finally:
        trainer.prefetch.close()
        ps.destroy_model_parallel()
