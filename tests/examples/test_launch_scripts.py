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


SBATCH = sorted(
    str(p.relative_to(REPO))
    for p in [*REPO.glob("examples/slurm/*.sbatch"), *REPO.glob("examples/recipes/*.sbatch")]
)


def _directives(script: str) -> dict[str, str]:
    out = {}
    for line in (REPO / script).read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("script", SBATCH)
def test_sbatch_directives_a_cluster_needs(script):
    d = _directives(script)
    # Slurm fails a job whose --output folder does not exist, without writing any log
    assert "/" not in d["output"], d["output"]
    assert "exclusive" in d and d["mem"] == "0"
    signal, _, lead = d["signal"].partition("@")
    assert signal.endswith("USR1") and int(lead) >= 600  # a 12B save takes minutes


@pytest.mark.parametrize("script", SBATCH)
def test_srun_gets_the_cpus_per_task(script, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/srun.args\n')
    (fake / "srun").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_CPUS_PER_TASK": "16", "SLURM_NNODES": "1"}
    out = run_script(script, env, "model.checkpoint=/ckpt/base")
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "srun.args").read_text().split()
    assert "--cpus-per-task=16" in args and "--kill-on-bad-exit=1" in args
    assert args[args.index("-m") + 1] == "megatron_lang.train"


GPU_SCRIPTS = [
    ("examples/train_single_node.sh", "torchrun", {}),
    ("examples/train_multinode.sh", "torchrun", {"NNODES": "2", "MASTER_ADDR": "node001"}),
    ("examples/slurm/train.sbatch", "srun", {}),
    *((s, "srun", {}) for s in SBATCH if s.startswith("examples/recipes/")),
]


@pytest.mark.parametrize("script,launcher,extra", GPU_SCRIPTS, ids=[s for s, _, _ in GPU_SCRIPTS])
@pytest.mark.parametrize("preset", [None, "max_split_size_mb:512"], ids=["default", "user"])
def test_gpu_launch_scripts_set_expandable_segments(
    script, launcher, extra, preset, tmp_path, monkeypatch
):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / launcher).write_text(
        f'#!/bin/sh\necho "$PYTORCH_CUDA_ALLOC_CONF" > {tmp_path}/alloc_conf\n'
    )
    (fake / launcher).chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_NNODES": "1", "GPUS_PER_NODE": "2", **extra}
    if preset:
        env["PYTORCH_CUDA_ALLOC_CONF"] = preset
    out = run_script(script, env, "model.checkpoint=/ckpt/base")
    assert out.returncode == 0, out.stderr
    got = (tmp_path / "alloc_conf").read_text().strip()
    assert got == (preset or "expandable_segments:True")
