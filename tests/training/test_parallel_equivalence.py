"""TP=2, PP=2 and DP=2 training runs follow the TP=1 loss curve (10 steps, within 1e-4).

All runs start from the same weights (a TP=1 start checkpoint, as a converted HF
model would be) and see the same global batches.
"""

from __future__ import annotations

import pytest

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def reference_losses(tiny_blend, start_checkpoint) -> list[float]:
    overrides = _jobs.base_overrides(tiny_blend, **{"model.checkpoint": start_checkpoint})
    return [h["loss"] for h in run_distributed(_jobs.train, 1, overrides)[0] if "loss" in h]


@pytest.mark.parametrize(
    "layout",
    [
        {"parallel.tensor_parallel": 2},
        {"parallel.pipeline_parallel": 2},
        {},
        {"model.recompute": "full"},
    ],
    ids=["tp2", "pp2", "dp2", "dp2-full-recompute"],
)
def test_loss_curve_matches_tp1(tiny_blend, start_checkpoint, reference_losses, layout):
    overrides = _jobs.base_overrides(tiny_blend, **{"model.checkpoint": start_checkpoint, **layout})
    for history in run_distributed(_jobs.train, 2, overrides):
        losses = [h["loss"] for h in history if "loss" in h]
        assert len(losses) == len(reference_losses) == 10
        assert max(abs(a - b) for a, b in zip(losses, reference_losses)) <= 1e-4
    assert reference_losses[-1] < reference_losses[0]  # the runs did learn


def test_interleaved_pipeline_matches_pp1(tiny_blend, tmp_path):
    """PP=2 with 2 virtual stages (interleaved schedule) on a 4-layer model."""
    start = str(tmp_path / "start4")
    run_distributed(_jobs.make_start_checkpoint, 1, tiny_blend, start, "model.arch.num_layers=4")
    common = {"model.checkpoint": start, "train.steps": 5, "data.micro_batch_size": 1}
    ref = run_distributed(_jobs.train, 1, _jobs.base_overrides(tiny_blend, **common))[0]
    vpp = {"parallel.pipeline_parallel": 2, "parallel.virtual_pipeline_parallel": 2}
    out = run_distributed(_jobs.train, 2, _jobs.base_overrides(tiny_blend, **common, **vpp))
    ref_losses = [h["loss"] for h in ref if "loss" in h]
    for history in out:
        losses = [h["loss"] for h in history if "loss" in h]
        assert len(losses) == 5
        assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-4
