"""The launch scripts resolve their layouts through --dry-run (no ranks are started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.examples._scripts import run_script

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_script(script, env, *args)


@pytest.mark.parametrize(
    "script,env,layout",
    [
        (
            "examples/train_single_node.sh",
            {"GPUS_PER_NODE": "8"},
            "TP=2 x PP=1 x CP=1 x DP=4 (8 ranks)",
        ),
        (
            "examples/train_multinode.sh",
            {"NNODES": "4", "NODE_RANK": "1", "MASTER_ADDR": "node001", "GPUS_PER_NODE": "8"},
            "TP=2 x PP=1 x CP=1 x DP=16 (32 ranks)",
        ),
        (
            "examples/slurm/train.sbatch",
            {"SLURM_NNODES": "4"},
            "TP=2 x PP=1 x CP=1 x DP=16 (32 ranks)",
        ),
        (
            "examples/slurm/train.sbatch",
            {"SLURM_NNODES": "4", "CONFIG": "examples/configs/mistral_nemo_12b_norwegian.yaml"},
            "TP=4 x PP=2 (VPP=5) x CP=1 x DP=4 (32 ranks)",
        ),
    ],
)
def test_dry_run_resolves_the_layout(script, env, layout):
    out = _run(script, env, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"layout: {layout}" in out.stdout
    assert "gradient accumulation" in out.stdout


def test_overrides_pass_through_and_a_bad_gpu_count_fails():
    out = _run(
        "examples/train_single_node.sh",
        {"GPUS_PER_NODE": "6"},
        "--dry-run",
        "parallel.tensor_parallel=4",
    )
    assert out.returncode == 2
    assert "world size 6 is not divisible by TP x PP x CP = 4 x 1 x 1 = 4" in out.stderr


def test_batch_that_does_not_divide_fails():
    out = _run(
        "examples/train_single_node.sh",
        {"GPUS_PER_NODE": "8"},
        "--dry-run",
        "data.global_batch_size=6",
    )
    assert out.returncode == 2
    assert (
        "data.global_batch_size=6 is not divisible by micro_batch_size x DP = 1 x 4" in out.stderr
    )
