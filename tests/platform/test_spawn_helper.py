"""The test helper that spawns gloo ranks (``tests/_distributed.py``)."""

from __future__ import annotations

import os

import pytest

from tests._distributed import run_distributed

pytestmark = pytest.mark.distributed


def _rank_report() -> dict:
    import torch
    import torch.distributed as dist

    from megatron_lang.platform import cpu_support

    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    return {
        "rank": dist.get_rank(),
        "world": dist.get_world_size(),
        "sum": total.item(),
        "cpu_support": cpu_support.is_enabled(),
        "env": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")},
    }


def test_ranks_meet_without_a_tcp_port_and_megatron_cpu_support_is_on():
    import torch

    reports = run_distributed(_rank_report, 3)
    assert [r["rank"] for r in reports] == [0, 1, 2]
    assert all(r["world"] == 3 and r["sum"] == 6.0 for r in reports)
    # init_distributed() still ran: it enables megatron-core's CPU support (CPU machines)
    assert all(r["cpu_support"] is not torch.cuda.is_available() for r in reports)
    # the rendezvous is the run's file store; no port was handed to the ranks
    assert [r["env"] for r in reports] == [
        {"RANK": str(n), "WORLD_SIZE": "3", "LOCAL_RANK": str(n), "MASTER_PORT": None}
        for n in range(3)
    ]
