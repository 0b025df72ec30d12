"""One forward/backward pass over a global batch through megatron-core's schedules.

The loss is a per-token mean over the whole global batch (all micro-batches and
data-parallel ranks): the loss function returns the masked loss *sum* and the
token count, megatron-core's ``finalize_model_grads`` divides the gradients by
the global token count (``calculate_per_token_loss``), and :func:`reduce_report`
turns the per-micro-batch sums into the global loss and per-source losses.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist

OBJECTIVE_FIELDS = 5
"""Report entries after the per-source ones: causal loss sum, causal tokens, MNTP loss sum,
MNTP tokens, MNTP samples."""


def report_size(n_sources: int) -> int:
    """Length of the report vector for ``n_sources`` blend sources."""
    return 2 + 2 * n_sources + OBJECTIVE_FIELDS


def loss_func(
    loss_mask: torch.Tensor,
    dataset_id: torch.Tensor | None,
    n_sources: int,
    output,
    mntp: torch.Tensor | None = None,
):
    """Masked per-token loss sum, token count, and a report vector for logging.

    The report is ``[loss_sum, tokens, per-source loss sums..., per-source tokens...,
    causal loss sum, causal tokens, MNTP loss sum, MNTP tokens, MNTP samples]``;
    ``mntp`` (``[b]``, 1 for MNTP samples) splits the loss by objective (None: all causal).
    """
    mask = loss_mask.float()
    losses = output.float().view(mask.shape)  # packed batches: [1, b*s] -> [b, s]
    per_sample = (losses * mask).sum(dim=1)
    tokens_per_sample = mask.sum(dim=1)
    loss_sum = per_sample.sum()
    num_tokens = mask.sum().to(torch.int)
    report = torch.zeros(report_size(n_sources), device=losses.device)
    report[0] = loss_sum.detach()
    report[1] = tokens_per_sample.sum()
    is_mntp = torch.zeros_like(per_sample) if mntp is None else mntp.to(losses).view(-1)
    base = 2 + 2 * n_sources
    report[base] = (per_sample.detach() * (1 - is_mntp)).sum()
    report[base + 1] = (tokens_per_sample * (1 - is_mntp)).sum()
    report[base + 2] = (per_sample.detach() * is_mntp).sum()
    report[base + 3] = (tokens_per_sample * is_mntp).sum()
    report[base + 4] = is_mntp.sum()
    if dataset_id is not None and n_sources:
        ids = dataset_id.to(losses.device).long().view(-1)
        report[2 : 2 + n_sources].index_add_(0, ids, per_sample.detach())
        report[2 + n_sources :].index_add_(0, ids, tokens_per_sample)
    return loss_sum, num_tokens, {"report": report}


def forward_step(n_sources: int, data_iterator, model):
    """megatron-core ``forward_step_func``: GPTModel forward with per-token losses."""
    from megatron.core import parallel_state
    from megatron.core.utils import get_batch_on_this_cp_rank

    batch = next(data_iterator)
    if "cu_seqlens" in batch:  # packed: the micro-batch is one THD sequence of b*s tokens
        from megatron.core.utils import get_model_config

        from megatron_lang.models.packed_attention import packed_seq_params

        # megatron-core's unfused THD RoPE reads the offsets on the host: give it the
        # batch's host copy (TE's fused RoPE takes the device ones without a sync)
        host_rope = not getattr(get_model_config(model), "apply_rope_fusion", False)
        output = model(
            batch["tokens"].reshape(1, -1),
            batch["position_ids"].reshape(1, -1),
            None,
            labels=batch["labels"].reshape(1, -1),
            packed_seq_params=packed_seq_params(batch, host_rope=host_rope),
        )
    else:
        if parallel_state.get_context_parallel_world_size() > 1:
            per_sample = {k: batch[k] for k in ("dataset_id", "mntp") if k in batch}
            batch = {k: v for k, v in batch.items() if k not in per_sample}
            batch = {**get_batch_on_this_cp_rank(batch), **per_sample}
        output = model(
            batch["tokens"],
            batch["position_ids"],
            batch.get("attention_mask"),
            labels=batch["labels"],
        )
    extra = {"mntp": batch["mntp"]} if "mntp" in batch else {}
    return output, partial(
        loss_func, batch["loss_mask"], batch.get("dataset_id"), n_sources, **extra
    )


def run_schedule(
    model_chunks: list,
    microbatches: list[dict],
    seq_length: int,
    n_sources: int,
    forward_only: bool = False,
) -> torch.Tensor:
    """Forward (and backward) over ``microbatches``; return the global report vector.

    ``microbatches`` are host tensors (pinned on CUDA): each moves to the GPU when the
    schedule takes it.

    The vector is summed over micro-batches and all ranks (only the last pipeline
    stage's first tensor-parallel rank contributes, so nothing is counted twice)
    and is identical on every rank.
    """
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_lang.platform.distributed import collective_device
    from megatron_lang.training.data import to_device

    # one micro-batch on the device at a time (explicit [s, s] masks are large)
    iterators = [map(to_device, microbatches) for _ in model_chunks]
    micro_batch = microbatches[0]["tokens"].shape[0]
    if "cu_seqlens" in microbatches[0]:  # packed: [b*s, 1, h] activations between stages
        seq_length, micro_batch = seq_length * micro_batch, 1
    outputs = get_forward_backward_func()(
        forward_step_func=partial(forward_step, n_sources),
        data_iterator=iterators if len(model_chunks) > 1 else iterators[0],
        model=model_chunks,
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch,
        forward_only=forward_only,
    )
    report = torch.zeros(report_size(n_sources), device=collective_device())
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    if outputs and last and parallel_state.get_tensor_model_parallel_rank() == 0:
        for out in outputs:
            report += out["report"].to(report.device)
    if dist.is_initialized():
        dist.all_reduce(report)
    return report.cpu()


def summarize(
    report: torch.Tensor, source_names: list[str], objective: bool = False
) -> dict[str, float]:
    """``{"loss": ..., "tokens": ..., "loss/<source>": ...}`` from a report vector.

    With ``objective`` (a hybrid or bidirectional run) also ``loss/causal`` and
    ``loss/mntp`` (when the step had such tokens), ``mntp_tokens`` and ``mntp_samples``.
    """
    n = len(source_names)
    tokens = float(report[1])
    out = {"loss": float(report[0]) / tokens if tokens else float("nan"), "tokens": tokens}
    for i, name in enumerate(source_names):
        t = float(report[2 + n + i])
        if t:
            out[f"loss/{name}"] = float(report[2 + i]) / t
    if objective:
        base = 2 + 2 * n
        for j, kind in enumerate(("causal", "mntp")):
            t = float(report[base + 2 * j + 1])
            if t:
                out[f"loss/{kind}"] = float(report[base + 2 * j]) / t
        out["mntp_tokens"] = float(report[base + 3])
        out["mntp_samples"] = float(report[base + 4])
    return out
