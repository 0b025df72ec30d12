"""``checkpoint.keep_last``: older checkpoints are deleted, the newest ones stay usable."""

from __future__ import annotations

import json

import pytest

from megatron_lang.checkpointing.checkpoint import latest_checkpoint
from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed


def _saved(root) -> dict[str, int]:
    """Every ``iter_*`` entry of ``root`` -> the step its train state records."""
    return {
        p.name: json.loads((p / "train_state.json").read_text())["step"]
        for p in sorted(root.glob("iter_*"))
    }


def test_keep_last_leaves_the_newest_complete_checkpoints_and_resume_continues(
    tiny_blend, tmp_path
):
    ckpt = tmp_path / "ckpt"

    def args(steps: int, **extra) -> list[str]:
        # the LR decays over 8 steps in every run, so a 6-step run is the start of an 8-step one
        return _jobs.base_overrides(
            tiny_blend, **{"train.steps": steps, "optimizer.decay_steps": 8, **extra}
        )

    keep = {"checkpoint.dir": ckpt, "checkpoint.save_interval": 2, "checkpoint.keep_last": 2}
    first = [h for h in run_distributed(_jobs.train, 1, args(6, **keep))[0] if "loss" in h]
    # saved at 2, 4, 6; only the last two are left, each complete, `latest` names the newest
    assert _saved(ckpt) == {"iter_0000004": 4, "iter_0000006": 6}
    assert (ckpt / "latest").read_text() == "iter_0000006\n"
    assert latest_checkpoint(ckpt) == ckpt / "iter_0000006"

    # resuming from it continues the run exactly, and keeps pruning
    resumed = [h for h in run_distributed(_jobs.train, 1, args(8, **keep))[0] if "loss" in h]
    assert [h["step"] for h in resumed] == [7, 8]
    assert _saved(ckpt) == {"iter_0000006": 6, "iter_0000008": 8}
    assert latest_checkpoint(ckpt) == ckpt / "iter_0000008"

    straight = [h for h in run_distributed(_jobs.train, 1, args(8))[0] if "loss" in h]
    assert [h["step"] for h in straight] == list(range(1, 9))
    assert [h["loss"] for h in first + resumed] == [h["loss"] for h in straight]
