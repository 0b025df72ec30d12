"""Seeding of Python, NumPy, torch and megatron-core's model-parallel RNG tracker."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int, model_parallel: bool = True) -> None:
    """Seed every generator this process uses.

    Args:
        seed: base seed; megatron-core derives per-TP-rank seeds from it for
            the model-parallel RNG tracker (dropout inside TP regions, init).
        model_parallel: also seed megatron-core's tracker (needs the
            model-parallel groups to exist).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if model_parallel:
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)
