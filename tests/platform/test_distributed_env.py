"""Reading torchrun / SLURM environments; backend choice."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.platform import backend_for_device, first_slurm_host, read_dist_env

pytestmark = pytest.mark.unit


def test_torchrun_variables():
    env = read_dist_env(
        {
            "RANK": "5",
            "WORLD_SIZE": "16",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "node7",
            "MASTER_PORT": "1234",
        }
    )
    assert (env.rank, env.world_size, env.local_rank) == (5, 16, 1)
    assert (env.master_addr, env.master_port, env.launcher) == ("node7", 1234, "torchrun")


def test_torchrun_wins_over_slurm():
    env = read_dist_env({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "9", "SLURM_NTASKS": "32"})
    assert (env.rank, env.world_size, env.launcher) == (1, 2, "torchrun")


def test_slurm_variables():
    env = read_dist_env(
        {
            "SLURM_PROCID": "13",
            "SLURM_NTASKS": "32",
            "SLURM_LOCALID": "5",
            "SLURM_NODELIST": "gpu-a[017-020,031]",
        }
    )
    assert (env.rank, env.world_size, env.local_rank) == (13, 32, 5)
    assert (env.master_addr, env.master_port, env.launcher) == ("gpu-a017", 29500, "slurm")


def test_slurm_master_addr_override_and_port():
    env = read_dist_env(
        {
            "SLURM_PROCID": "0",
            "SLURM_NTASKS": "8",
            "SLURM_NODELIST": "n[1-2]",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "6000",
        }
    )
    assert (env.master_addr, env.master_port) == ("10.0.0.1", 6000)


def test_single_process_default():
    env = read_dist_env({})
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (0, 1, 0, "single")


@pytest.mark.parametrize(
    "nodelist,first",
    [
        ("node01", "node01"),
        ("gpu[003-010,012]", "gpu003"),
        ("a[7],b[1-2]", "a7"),
        ("host1,host2", "host1"),
        ("x[09-10]", "x09"),
    ],
)
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_bad_values_name_the_variable():
    with pytest.raises(ValueError, match="SLURM_NTASKS='many'"):
        read_dist_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "many", "SLURM_NODELIST": "n1"})
    with pytest.raises(ValueError, match="SLURM_NODELIST is empty"):
        read_dist_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


def test_backend_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend_for_device() == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backend_for_device() == "nccl"


@pytest.mark.gpu
def test_nccl_process_group_on_gpu():
    from tests._distributed import run_distributed

    assert run_distributed(_backend_name, 1) == ["nccl"]


def _backend_name() -> str:
    import torch.distributed as dist

    return dist.get_backend()
