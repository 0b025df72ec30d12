"""Jobs run on spawned gloo ranks by the engine tests (module-level, picklable)."""

from __future__ import annotations

import torch

from megatron_lang.models.sharding import gather_full_state_dict, load_full_state_dict
from tests.platform import _engine as E

REF_SEED = 1234
OTHER_SEED = 999  # models built with this seed get their weights from a full state dict


def _sgd_step(model, config, full=None):
    if full is not None:
        load_full_state_dict(model, full)
    opt = E.sgd(model.parameters())
    opt.zero_grad()
    losses = E.forward_backward(model, config, E.microbatches(E.batch(4, seed=1), 2))
    opt.step()
    return [d["loss"] for d in losses], gather_full_state_dict(model)


def _distopt_steps(dp_rank: int, dp_size: int, full, steps: int = 3):
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    model, config = E.setup(seed=OTHER_SEED)
    load_full_state_dict(model, full)
    ddp = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True),
        model,
    )
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    opt = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=1e-2,
            weight_decay=0.01,
            clip_grad=1.0,
            use_distributed_optimizer=True,
        ),
        [ddp],
    )
    losses = []
    for step in range(steps):
        ddp.zero_grad_buffer()
        opt.zero_grad()
        global_batch = E.batch(4, seed=10 + step)
        mine = {
            k: v[dp_rank * 4 // dp_size : (dp_rank + 1) * 4 // dp_size]
            for k, v in global_batch.items()
        }
        out = E.forward_backward(ddp, config, E.microbatches(mine, 2))
        ok, grad_norm, _ = opt.step()
        assert ok, f"optimizer step {step} was skipped"
        losses.append(sum(float(d["loss"]) for d in out) / len(out))
    return losses, gather_full_state_dict(model)


def reference() -> dict:
    """World size 1: the reference weights and results for every engine test."""
    model, config = E.setup(seed=REF_SEED)
    full = gather_full_state_dict(model)
    logits = E.gathered_logits(model, config, E.batch(2))
    sgd_losses, sgd_full = _sgd_step(model, config)
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    dist_losses, dist_full = _distopt_steps(0, 1, full)
    return {
        "full": full,
        "logits": logits,
        "sgd_losses": sgd_losses,
        "sgd_full": sgd_full,
        "distopt_losses": dist_losses,
        "distopt_full": dist_full,
    }


def tp_logits(tp: int, full) -> dict:
    """Logits of the reference weights loaded at TP=tp."""
    model, config = E.setup(tp=tp, seed=OTHER_SEED)
    load_full_state_dict(model, full)
    return {
        "logits": E.gathered_logits(model, config, E.batch(2)),
        "full": gather_full_state_dict(model),
    }


def one_step(tp: int, pp: int, full) -> dict:
    """Losses and updated weights after one SGD step through the pipeline schedule."""
    model, config = E.setup(tp=tp, pp=pp, seed=OTHER_SEED)
    losses, after = _sgd_step(model, config, full)
    return {"losses": losses or None, "full": after}


def dp_distopt(full) -> dict:
    """DP=world size, distributed optimizer, each rank its share of the global batch."""
    import torch.distributed as dist

    E.setup()  # TP=1, PP=1: all ranks are data-parallel
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    losses, after = _distopt_steps(dist.get_rank(), dist.get_world_size(), full)
    return {"losses": losses, "full": after}


def save_checkpoint(tp: int, pp: int, full, ckpt_dir: str) -> dict:
    """Load the reference weights at TP/PP, save with dist_checkpointing, return logits."""
    from megatron.core import dist_checkpointing

    model, config = E.setup(tp=tp, pp=pp, seed=OTHER_SEED)
    load_full_state_dict(model, full)
    dist_checkpointing.save(model.sharded_state_dict(), ckpt_dir)
    return {"logits": E.gathered_logits(model, config, E.batch(2))}


def load_checkpoint(tp: int, pp: int, ckpt_dir: str) -> dict:
    """Build at TP/PP with other weights, load the checkpoint, return logits and weights."""
    from megatron.core import dist_checkpointing

    model, config = E.setup(tp=tp, pp=pp, seed=OTHER_SEED)
    state = dist_checkpointing.load(model.sharded_state_dict(), ckpt_dir)
    model.load_state_dict(state)
    return {
        "logits": E.gathered_logits(model, config, E.batch(2)),
        "full": gather_full_state_dict(model),
    }


def stage_layer_weights(pp: int) -> dict:
    """This stage's first transformer layer's weights, freshly initialised at PP=``pp``."""
    model, _ = E.setup(pp=pp)
    layer = model.decoder.layers[0]
    state = layer.state_dict().items()
    return {k: v.detach().clone() for k, v in state if torch.is_tensor(v) and v.is_floating_point()}


def stage_random_draws(pp: int) -> dict:
    """Draws of every generator right after seeding, on this pipeline stage."""
    import random

    import numpy as np
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    E.setup(pp=pp)
    E.set_seed(REF_SEED)
    with get_cuda_rng_tracker().fork():  # dropout inside tensor-parallel regions
        tracker = torch.rand(4)
    return {
        "python": random.random(),
        "numpy": float(np.random.rand()),
        "torch": torch.rand(4),
        "tracker": tracker,
    }
