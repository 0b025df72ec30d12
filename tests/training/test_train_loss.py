"""A tiny model trained on real Danish/Nynorsk text: the loss falls."""

from __future__ import annotations

import pytest

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed


def test_loss_falls_over_50_steps(tiny_blend, tmp_path):
    overrides = _jobs.base_overrides(
        tiny_blend, **{"train.steps": 50, "logging.tensorboard_dir": tmp_path / "tb"}
    )
    history = run_distributed(_jobs.train, 1, overrides)[0]
    train = [h for h in history if "loss" in h]
    assert [h["step"] for h in train] == list(range(1, 51))
    first, last = sum(h["loss"] for h in train[:5]) / 5, sum(h["loss"] for h in train[-5:]) / 5
    assert last < first - 1.0, (first, last)
    # per-source losses and throughput figures are reported
    assert {"loss/da_gimp", "loss/nn_gimp", "tokens_per_s", "grad_norm", "lr"} <= set(train[-1])
    valid = [h for h in history if "valid/da/da_gimp/loss" in h]
    assert valid and valid[-1]["valid/da/da_gimp/ppl"] > 1.0
    assert any((tmp_path / "tb").iterdir())
