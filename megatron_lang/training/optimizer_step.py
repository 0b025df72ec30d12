"""One optimizer step that is skipped when the gradients are not finite.

megatron-core's ``optimizer.step()`` checks gradients for NaN/Inf only through
a loss scaler (fp16, or ``loss_scale`` set); in bf16 and fp32 a non-finite
gradient with a finite loss goes straight into the update: the global norm is
NaN, clipping multiplies every gradient by NaN and every weight becomes NaN.
:func:`guarded_step` runs the same stages as megatron-core's
``ChainedOptimizer.step`` (prepare, global norm, clip, update) and stops after
the norm when it is not finite, on every rank alike (the norm is all-reduced
over the ranks that share the gradients), so the trainer can count the step as
skipped. Megatron-LM reaches the same point with ``check_for_nan_in_grad``,
which raises instead of skipping.
"""

from __future__ import annotations

import math

import torch


def _optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


@torch.no_grad()
def guarded_step(optimizer) -> tuple[bool, float]:
    """Step ``optimizer`` unless its gradients are non-finite.

    Args:
        optimizer: a megatron-core optimizer (chained or single).

    Returns:
        ``(applied, grad_norm)``: whether the weights were updated, and the global
        gradient norm before clipping (NaN/Inf when the step was skipped; NaN too
        when a loss scaler found an overflow).
    """
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

    if optimizer.prepare_grads():  # a loss scaler found Inf/NaN (fp16 / loss_scale)
        return False, float("nan")
    grad_norm = float(optimizer.get_grad_norm())
    if not math.isfinite(grad_norm):
        return False, grad_norm
    for opt in _optimizers(optimizer):
        if getattr(opt, "is_stub_optimizer", False) or opt.config.clip_grad <= 0.0:
            continue
        params = opt.get_parameters()
        if params:
            clip_grad_by_total_norm_fp32(
                params,
                max_norm=opt.config.clip_grad,
                total_norm=grad_norm,
                use_decoupled_grad=opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8,
            )
    return bool(optimizer.step_with_ready_grads()), grad_norm


@torch.no_grad()
def stale_master_weights(optimizer) -> list[str]:
    """Parameters whose fp32 master copy is not the model's weight (mixed precision).

    Checks ``Float16OptimizerWithFloat16Params`` (model params vs fp32 copies) and
    the ``DistributedOptimizer`` (this rank's shard of each param vs its fp32 shard):
    the master rounded to the model dtype must equal the model weight. fp32
    optimizers have no copies (the master is the parameter). Local, no collectives.

    Returns:
        ``"group g, param i, shape"`` labels of the mismatching parameters.
    """
    bad = []
    for opt in _optimizers(optimizer):
        pairs = []
        if hasattr(opt, "shard_fp32_from_float16_groups"):  # DistributedOptimizer
            pairs = zip(opt.shard_float16_groups, opt.shard_fp32_from_float16_groups)
        elif hasattr(opt, "fp32_from_float16_groups"):  # Float16OptimizerWithFloat16Params
            pairs = zip(opt.float16_groups, opt.fp32_from_float16_groups)
        for g, (models, masters) in enumerate(pairs):
            for i, (model, master) in enumerate(zip(models, masters)):
                if not torch.equal(master.to(model.dtype), model.view_as(master)):
                    bad.append(f"group {g}, param {i}, shape {tuple(model.shape)}")
    return bad
