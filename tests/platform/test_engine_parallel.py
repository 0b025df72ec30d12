"""megatron-core on CPU/gloo through the platform layer: TP, PP, DP + distributed optimizer.

Each test loads the same reference weights (made at TP=1 on one rank) into a
model built with a different seed at another layout, so a wrong shard — the
SwiGLU gate/up split, a GQA group, a pipeline stage's layer offset — shows up as
a mismatch.
"""

from __future__ import annotations

import pytest
import torch

from tests._distributed import run_distributed
from tests.platform import _engine_jobs as jobs

pytestmark = pytest.mark.distributed


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_tp2_logits_match_tp1(engine_reference):
    results = run_distributed(jobs.tp_logits, 2, 2, engine_reference["full"])
    ref = engine_reference["logits"]
    for r in results:
        assert r["logits"].shape == ref.shape == (2, 16, 128)
        assert (r["logits"] - ref).abs().max().item() <= 1e-5
        # gathering the shards gives back exactly the weights that were loaded
        assert _max_diff(r["full"], engine_reference["full"]) == 0.0


@pytest.mark.parametrize("tp,pp", [(1, 2), (2, 2)], ids=["pp2", "tp2xpp2"])
def test_pipeline_one_step_matches_pp1(engine_reference, tp, pp):
    results = run_distributed(jobs.one_step, tp * pp, tp, pp, engine_reference["full"])
    losses = [r["losses"] for r in results if r["losses"] is not None]
    assert len(losses) == tp, "only the last pipeline stage's ranks report losses"
    for got in losses:
        torch.testing.assert_close(
            torch.stack(got), torch.stack(engine_reference["sgd_losses"]), rtol=0, atol=1e-5
        )
    for r in results:
        assert _max_diff(r["full"], engine_reference["sgd_full"]) <= 1e-5
    # the step changed the weights: the comparison above is not between two copies of the input
    assert _max_diff(engine_reference["sgd_full"], engine_reference["full"]) > 1e-3


def test_dp2_distributed_optimizer_matches_dp1(engine_reference):
    results = run_distributed(jobs.dp_distopt, 2, engine_reference["full"])
    ref_losses = engine_reference["distopt_losses"]
    # the two ranks see different halves of each global batch
    assert results[0]["losses"] != results[1]["losses"]
    for r in results:
        assert _max_diff(r["full"], engine_reference["distopt_full"]) <= 1e-5
    mean_losses = [(a + b) / 2 for a, b in zip(results[0]["losses"], results[1]["losses"])]
    assert mean_losses == pytest.approx(ref_losses, abs=1e-5)
    assert _max_diff(engine_reference["distopt_full"], engine_reference["full"]) > 1e-3
