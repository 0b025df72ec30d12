"""Seeding of Python, NumPy, torch and megatron-core's model-parallel RNG tracker."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def set_seed(seed: int, model_parallel: bool = True) -> None:
    """Seed every generator this process uses.

    Args:
        seed: base seed; megatron-core derives per-TP-rank seeds from it for
            the model-parallel RNG tracker (dropout inside TP regions, init).
            Each pipeline stage adds ``100 x`` its rank, as Megatron-LM does: stages
            build different layers, which must not start from the same draws.
        model_parallel: also seed megatron-core's tracker (needs the
            model-parallel groups to exist).
    """
    if model_parallel:
        from megatron.core import parallel_state

        seed += 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if model_parallel:
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)


def get_rng_states() -> dict[str, Any]:
    """This process's generator states (Python, NumPy, torch, CUDA, megatron-core's tracker).

    Only tensors, ints, floats, strings, tuples and dicts: ``torch.load(weights_only=True)``
    reads a saved copy without unpickling arbitrary objects (NumPy's key array is kept as
    an int64 tensor).
    """
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
        "tracker": dict(get_cuda_rng_tracker().get_states()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore states from :func:`get_rng_states`."""
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


@contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Run a block without advancing any generator (e.g. a throw-away weight init)."""
    state = get_rng_states()
    try:
        yield
    finally:
        set_rng_states(state)
