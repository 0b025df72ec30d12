"""Device and process-group set-up, model-parallel layout, seeding, logging.

CPU machines: :mod:`cpu_support` redirects megatron-core's hard CUDA calls, and
is switched on only when CUDA is absent.

Names are imported lazily, so ``from megatron_lang.platform.logging import
get_logger`` (used by torch-free data workers) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DistEnv": "distributed",
    "backend_for_device": "distributed",
    "collective_device": "distributed",
    "collective_tensor": "distributed",
    "destroy_distributed": "distributed",
    "first_slurm_host": "distributed",
    "init_distributed": "distributed",
    "read_dist_env": "distributed",
    "get_logger": "logging",
    "setup_logging": "logging",
    "ParallelConfigError": "parallel",
    "ParallelLayout": "parallel",
    "initialize_model_parallel": "parallel",
    "validate_layout": "parallel",
    "set_seed": "seed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
