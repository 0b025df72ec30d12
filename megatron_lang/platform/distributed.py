"""Process-group set-up from torchrun or SLURM environment variables.

NCCL is used when CUDA is present, gloo otherwise (and the CPU support for
megatron-core is switched on, see :mod:`megatron_lang.platform.cpu_support`).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_lang.platform import cpu_support
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, read from the launcher's environment."""

    rank: int
    """Global rank."""
    world_size: int
    """Number of processes in the job."""
    local_rank: int
    """Rank on this node (selects the GPU)."""
    master_addr: str
    """Host of rank 0."""
    master_port: int
    """TCP port of the rendezvous store on ``master_addr``."""
    launcher: str
    """'torchrun', 'slurm' or 'single'."""


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list, e.g. ``gpu[003-010,012],cpu1`` -> ``gpu003``.

    Raises:
        ValueError: if the list is empty or malformed.
    """
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("SLURM_NODELIST is empty")
    m = re.match(r"^([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM_NODELIST={nodelist!r}")
    prefix, ranges = m.group(1), m.group(3)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    if not first:
        raise ValueError(f"cannot parse SLURM_NODELIST={nodelist!r}")
    return prefix + first


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError as e:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from e


def read_dist_env(env: Mapping[str, str] | None = None) -> DistEnv:
    """Read rank/world/master from torchrun variables, else SLURM, else single process.

    torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.  Under
    ``srun`` without torchrun, SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
    SLURM_NODELIST are used (master = first host of the node list; the port from
    MASTER_PORT or 29500).
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=_int(env, "RANK"),
            world_size=_int(env, "WORLD_SIZE"),
            local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
        return DistEnv(
            rank=_int(env, "SLURM_PROCID"),
            world_size=_int(env, "SLURM_NTASKS"),
            local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
            launcher="slurm",
        )
    return DistEnv(
        0,
        1,
        0,
        "127.0.0.1",
        _int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
        "single",
    )


def backend_for_device() -> str:
    """'nccl' when CUDA is available, else 'gloo'."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def collective_device() -> torch.device:
    """The device every tensor handed to a collective must live on.

    The one place that decides it: NCCL (the backend on CUDA machines) has no CPU
    backend, so a tensor made with ``torch.tensor([...])`` and all-reduced fails
    there ("No backend type associated with device type cpu"); gloo takes CPU
    tensors. Make collective tensors with ``device=collective_device()`` (or
    :func:`collective_tensor`), never without a device.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective_tensor(values, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.tensor(values)`` on :func:`collective_device` (ready for a collective)."""
    return torch.tensor(values, dtype=dtype, device=collective_device())


def gpu_for_local_rank(local_rank: int, device_count: int) -> int:
    """The GPU index of a rank: ``local_rank % device_count``.

    torchrun gives each node's ranks all its GPUs (local rank = GPU index); some
    SLURM set-ups (``--gpus-per-task=1``, ``--gpu-bind=single:1``) show each task
    only its own GPU, so local rank 5 sees one device, index 0.

    Raises:
        RuntimeError: no GPU is visible.
    """
    if device_count < 1:
        raise RuntimeError(f"local rank {local_rank}: CUDA is available but no GPU is visible")
    return local_rank % device_count


def init_distributed(
    env: DistEnv | None = None, backend: str | None = None, timeout_s: float = 600.0
) -> DistEnv:
    """Initialise ``torch.distributed`` for this process (idempotent).

    On CUDA machines selects the GPU ``local_rank % device_count`` and NCCL; without CUDA,
    enables the CPU support for megatron-core and uses gloo.

    Returns:
        The environment the process group was initialised from.
    """
    env = env or read_dist_env()
    if not torch.cuda.is_available():
        cpu_support.enable()
    else:
        torch.cuda.set_device(gpu_for_local_rank(env.local_rank, torch.cuda.device_count()))
    if dist.is_initialized():
        return env
    backend = backend or backend_for_device()
    os.environ["MASTER_ADDR"] = env.master_addr
    os.environ["MASTER_PORT"] = str(env.master_port)
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    log.info(
        "torch.distributed up: %d ranks, backend %s (%s)", env.world_size, backend, env.launcher
    )
    return env


def destroy_distributed() -> None:
    """Tear down megatron-core's model-parallel groups and the process group."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
