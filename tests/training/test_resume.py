"""Exact resume after SIGKILL, save-and-exit on SIGTERM, crash during a save, resharded resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests._distributed import free_port, run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]


KILL_SEED = int(os.environ.get("MEGATRON_LANG_TEST_SEED", "20261203"))
"""Seed of the step at which the SIGKILL test kills the run (printed; set it to replay)."""


def _start(overrides: list[str], ranks: int = 1, **env_extra: str) -> subprocess.Popen:
    """``python -m megatron_lang.train`` (``ranks`` > 1: under torchrun, which picks the port)."""
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", **env_extra}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    launcher = [sys.executable, "-m", "megatron_lang.train"]
    if ranks > 1:
        env.pop("MASTER_PORT")
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc-per-node={ranks}", "-m", "megatron_lang.train"]
    # Output to a file, not a pipe, and a session of its own: a SIGKILLed rank leaves
    # megatron-core's checkpoint-writer Manager process orphaned, holding whatever
    # stdout it inherited; _finish kills the session's leftovers.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [*launcher, *overrides],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    proc.log = log
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, _output(proc)


def _steps(metrics_file: Path) -> dict[int, float]:
    """Loss per step; a step logged twice (re-done after a resume) keeps its last value."""
    losses = {}
    for line in metrics_file.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            losses[rec["step"]] = rec["loss"]
    return losses


def _wait_for_steps(metrics_file: Path, n: int, proc: subprocess.Popen, timeout=180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if metrics_file.exists() and len(_steps(metrics_file)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early:\n{_output(proc)}")
        time.sleep(0.05)
    raise AssertionError(f"no step {n} within {timeout} s")


def test_sigkill_then_resume_repeats_the_uninterrupted_losses_bitwise(tiny_blend, tmp_path):
    steps = 12
    common = {"train.steps": steps, "checkpoint.save_interval": 3}
    ref = tmp_path / "ref.jsonl"
    code, out = _finish(
        _start(_jobs.base_overrides(tiny_blend, **common, **{"logging.metrics_file": ref}))
    )
    assert code == 0, out

    metrics = tmp_path / "run.jsonl"
    args = _jobs.base_overrides(
        tiny_blend,
        **common,
        **{"logging.metrics_file": metrics, "checkpoint.dir": tmp_path / "ckpt"},
    )
    kill_at = random.Random(KILL_SEED).randint(4, steps - 2)
    print(f"MEGATRON_LANG_TEST_SEED={KILL_SEED}: SIGKILL after step {kill_at}")
    proc = _start(args)
    _wait_for_steps(metrics, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    killed_at = max(_steps(metrics))
    assert killed_at < steps, "the run finished before it was killed"
    latest = (tmp_path / "ckpt" / "latest").read_text().strip()
    assert int(latest.split("_")[1]) <= killed_at

    logged_before = len(metrics.read_text().splitlines())
    code, out = _finish(_start(args))
    assert code == 0, out
    resumed = [json.loads(x) for x in metrics.read_text().splitlines()[logged_before:]]
    assert resumed[0]["step"] == int(latest.split("_")[1]) + 1  # continued after `latest`
    expected, got = _steps(ref), _steps(metrics)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected, f"killed after step {killed_at}, resumed from {latest}"


def test_sigterm_saves_a_complete_checkpoint_and_exits_0(tiny_blend, tmp_path):
    metrics = tmp_path / "m.jsonl"
    proc = _start(
        _jobs.base_overrides(
            tiny_blend,
            **{
                "train.steps": 1500,
                "logging.metrics_file": metrics,
                "checkpoint.dir": tmp_path / "ckpt",
            },
        )
    )
    _wait_for_steps(metrics, 3, proc)
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 0, out
    last = max(_steps(metrics))
    latest = (tmp_path / "ckpt" / "latest").read_text().strip()
    assert latest == f"iter_{last:07d}"
    state = json.loads((tmp_path / "ckpt" / latest / "train_state.json").read_text())
    assert state["step"] == last and state["consumed_samples"] == 8 * last
    assert (tmp_path / "ckpt" / latest / "megatron_lang.json").is_file()
    assert (tmp_path / "ckpt" / latest / "tokenizer" / "tokenizer.json").is_file()


def _crash_on_second_save(overrides: list[str]) -> dict:
    """Run a job whose second checkpoint save dies half-way; report what is on disk."""
    import megatron.core.dist_checkpointing as dcp

    original, calls = dcp.save, []

    def flaky_save(state, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            original(state, path, *args, **kwargs)  # files written, never completed
            raise OSError("disk failure during save")
        return original(state, path, *args, **kwargs)

    dcp.save = flaky_save
    try:
        _jobs.train(overrides)
    except OSError as e:
        return {"error": str(e), "saves": calls}
    return {"error": None, "saves": calls}


def test_crash_during_save_keeps_latest_on_the_previous_checkpoint(tiny_blend, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = _jobs.base_overrides(
        tiny_blend,
        **{
            "train.steps": 6,
            "checkpoint.save_interval": 2,
            "checkpoint.dir": ckpt,
        },
    )
    result = run_distributed(_crash_on_second_save, 1, args)[0]
    assert result["error"] == "disk failure during save"
    assert (ckpt / "latest").read_text().strip() == "iter_0000002"
    assert (ckpt / "iter_0000004.tmp").is_dir() and not (ckpt / "iter_0000004").exists()
    # the next run ignores the broken save and resumes from step 2
    history = run_distributed(_jobs.train, 1, args)[0]
    assert [h["step"] for h in history if "loss" in h] == [3, 4, 5, 6]
    assert not (ckpt / "iter_0000004.tmp").exists()
    assert (ckpt / "latest").read_text().strip() == "iter_0000006"


def test_tp2_checkpoint_resumes_at_tp1_and_pp2(tiny_blend, start_checkpoint, tmp_path):
    common = {"model.checkpoint": start_checkpoint, "train.steps": 8}
    tp2 = _jobs.base_overrides(
        tiny_blend,
        **common,
        **{
            "parallel.tensor_parallel": 2,
            "checkpoint.dir": tmp_path / "tp2",
            "checkpoint.optimizer_format": "fully_reshardable",  # for a layout change
            "checkpoint.save_interval": 4,
        },
    )
    ref = [h for h in run_distributed(_jobs.train, 2, tp2)[0] if "loss" in h]
    for name, world, layout in [("tp1", 1, {}), ("pp2", 2, {"parallel.pipeline_parallel": 2})]:
        d = tmp_path / name
        d.mkdir()
        shutil.copytree(tmp_path / "tp2" / "iter_0000004", d / "iter_0000004")
        (d / "latest").write_text("iter_0000004\n")
        args = _jobs.base_overrides(tiny_blend, **common, **layout, **{"checkpoint.dir": d})
        resumed = [h for h in run_distributed(_jobs.train, world, args)[0] if "loss" in h]
        assert [h["step"] for h in resumed] == [5, 6, 7, 8]
        for a, b in zip(resumed, ref[4:]):
            assert abs(a["loss"] - b["loss"]) <= 1e-4, (name, a["step"], a["loss"], b["loss"])


def test_async_checkpoints_are_complete_and_exact(tiny_blend, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = _jobs.base_overrides(
        tiny_blend,
        **{
            "train.steps": 6,
            "checkpoint.save_interval": 2,
            "checkpoint.dir": ckpt,
            "checkpoint.async_save": True,
        },
    )
    full = [h for h in run_distributed(_jobs.train, 1, args)[0] if "loss" in h]
    assert (ckpt / "latest").read_text().strip() == "iter_0000006"
    assert not list(ckpt.glob("*.tmp"))
    for n in (2, 4, 6):
        assert json.loads((ckpt / f"iter_{n:07d}" / "train_state.json").read_text())["step"] == n
    # resuming from the step-2 checkpoint repeats steps 3..6 exactly: the background
    # writer saw the state of step 2, not of later steps
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(ckpt / "iter_0000002", again / "iter_0000002")
    (again / "latest").write_text("iter_0000002\n")
    args2 = _jobs.base_overrides(tiny_blend, **{"train.steps": 6, "checkpoint.dir": again})
    resumed = [h for h in run_distributed(_jobs.train, 1, args2)[0] if "loss" in h]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full[2:]]


@pytest.mark.parametrize("point,rank", [("save-written", 1), ("save-renamed", 0)])
def test_a_2_rank_job_killed_inside_a_save_keeps_latest_and_resumes_bitwise(
    tiny_blend, tmp_path, point, rank
):
    """SIGKILL (MEGATRON_LANG_KILL_AT, checkpointing/faults.py) at a logged point of a save."""
    common = {"train.steps": 6, "checkpoint.save_interval": 2, "data.micro_batch_size": 2}
    ref = tmp_path / "ref.jsonl"
    code, out = _finish(
        _start(_jobs.base_overrides(tiny_blend, **common, **{"logging.metrics_file": ref}), 2)
    )
    assert code == 0, out

    ckpt, metrics = tmp_path / "ckpt", tmp_path / "run.jsonl"
    args = _jobs.base_overrides(
        tiny_blend, **common, **{"logging.metrics_file": metrics, "checkpoint.dir": ckpt}
    )
    code, out = _finish(_start(args, 2, MEGATRON_LANG_KILL_AT=f"{point}@4:{rank}"))
    assert code != 0, out
    assert f"rank {rank} killed at {point} of step 4" in out, out
    assert (ckpt / "latest").read_text().strip() == "iter_0000002"
    if point == "save-written":
        assert (ckpt / "iter_0000004.tmp").is_dir() and not (ckpt / "iter_0000004").exists()
    else:  # renamed into place, but latest was not moved yet
        assert (ckpt / "iter_0000004" / "train_state.json").is_file()

    logged_before = len(metrics.read_text().splitlines())
    code, out = _finish(_start(args, 2))
    assert code == 0, out
    resumed = [json.loads(x) for x in metrics.read_text().splitlines()[logged_before:]]
    assert resumed[0]["step"] == 3  # from iter_0000002, the checkpoint latest named
    assert (ckpt / "latest").read_text().strip() == "iter_0000006"
    assert not list(ckpt.glob("*.tmp"))
    assert _steps(metrics) == _steps(ref)  # steps 3-4 redone after the kill: same losses


def test_dp_reshardable_checkpoint_refuses_a_model_parallel_change_and_names_the_fix(tmp_path):
    from megatron_lang.checkpointing.checkpoint import (
        CheckpointLayoutError,
        TrainState,
        check_resume_layout,
    )

    saved = {
        "tensor_parallel": 2,
        "pipeline_parallel": 1,
        "virtual_pipeline_parallel": None,
        "context_parallel": 1,
        "sequence_parallel": False,
        "world_size": 4,
    }
    state = TrainState(step=40, layout=saved, optimizer_format="dp_reshardable")
    # another DP size: fine (this format reshards over DP)
    assert check_resume_layout(tmp_path, state, {**saved, "world_size": 2}) == "dp_reshardable"
    with pytest.raises(CheckpointLayoutError, match="tensor_parallel 2 -> 1") as e:
        check_resume_layout(tmp_path, state, {**saved, "tensor_parallel": 1})
    assert "checkpoint.optimizer_format=fully_reshardable train.steps=41" in str(e.value)
    state.optimizer_format = "fully_reshardable"
    assert check_resume_layout(tmp_path, state, {**saved, "pipeline_parallel": 2}) == (
        "fully_reshardable"
    )


def test_dp2_overlapped_checkpoint_resumes_at_dp1_and_with_overlap_toggled(tiny_blend, tmp_path):
    """The dp_reshardable optimizer state follows the gradient buckets; their layout is
    optimizer.ddp_bucket_size whatever the DP size and overlap_grad_reduce (megatron-core's
    default is one bucket without overlap and max(40M, 1M x DP) parameters with it)."""
    bucket = 30_000  # tiny-llama has ~140k parameters: several buckets
    common = {"train.steps": 8, "optimizer.ddp_bucket_size": bucket}
    ref_dir = tmp_path / "ref"
    ref_args = _jobs.base_overrides(
        tiny_blend,
        **common,
        **{
            "optimizer.overlap_grad_reduce": True,
            "checkpoint.dir": ref_dir,
            "checkpoint.save_interval": 4,
        },
    )
    ref = [h for h in run_distributed(_jobs.train, 2, ref_args)[0] if "loss" in h]
    state = json.loads((ref_dir / "iter_0000004" / "train_state.json").read_text())
    assert state["optimizer_format"] == "dp_reshardable"
    assert state["ddp_bucket_size"] == bucket
    assert len(state["bucket_layout"][0][0]) > 1, state["bucket_layout"]

    def resume(name: str, world: int, **extra):
        d = tmp_path / name
        d.mkdir()
        shutil.copytree(ref_dir / "iter_0000004", d / "iter_0000004")
        (d / "latest").write_text("iter_0000004\n")
        args = _jobs.base_overrides(tiny_blend, **{**common, **extra, "checkpoint.dir": d})
        return [h for h in run_distributed(_jobs.train, world, args)[0] if "loss" in h]

    for name, world in (("dp1-no-overlap", 1), ("dp2-no-overlap", 2)):
        got = resume(name, world, **{"optimizer.overlap_grad_reduce": False})
        assert [h["step"] for h in got] == [5, 6, 7, 8]
        for a, b in zip(got, ref[4:]):
            assert abs(a["loss"] - b["loss"]) <= 1e-4, (name, a["step"], a["loss"], b["loss"])

    # another bucket size cannot load this state: refused before the load, naming the fix
    with pytest.raises(RuntimeError, match=f"optimizer.ddp_bucket_size={bucket}"):
        resume("other-buckets", 1, **{"optimizer.ddp_bucket_size": 2 * bucket})
