"""Device and process-group set-up, model-parallel layout, seeding, logging.

CPU machines: :mod:`cpu_support` redirects megatron-core's hard CUDA calls, and
is switched on only when CUDA is absent.
"""

from megatron_lang.platform.distributed import (
    DistEnv,
    backend_for_device,
    destroy_distributed,
    first_slurm_host,
    init_distributed,
    read_dist_env,
)
from megatron_lang.platform.logging import get_logger, setup_logging
from megatron_lang.platform.parallel import (
    ParallelConfigError,
    ParallelLayout,
    initialize_model_parallel,
    validate_layout,
)
from megatron_lang.platform.seed import set_seed

__all__ = [
    "DistEnv",
    "ParallelConfigError",
    "ParallelLayout",
    "backend_for_device",
    "destroy_distributed",
    "first_slurm_host",
    "get_logger",
    "init_distributed",
    "initialize_model_parallel",
    "read_dist_env",
    "set_seed",
    "setup_logging",
    "validate_layout",
]
