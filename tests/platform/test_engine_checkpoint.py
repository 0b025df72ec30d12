"""megatron-core dist_checkpointing on CPU: save at TP=2, load at TP=1 and at PP=2."""

from __future__ import annotations

import pytest

from tests._distributed import run_distributed
from tests.platform import _engine_jobs as jobs

pytestmark = pytest.mark.distributed


def test_tp2_checkpoint_loads_at_tp1_and_pp2(engine_reference, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    ckpt = str(ckpt)
    saved = run_distributed(jobs.save_checkpoint, 2, 2, 1, engine_reference["full"], ckpt)
    saved_logits = saved[0]["logits"]
    for tp, pp in [(1, 1), (1, 2)]:
        loaded = run_distributed(jobs.load_checkpoint, tp * pp, tp, pp, ckpt)
        for r in loaded:
            # weights come back bit for bit, whatever the layout
            for k, v in engine_reference["full"].items():
                assert r["full"][k].equal(v), f"{k} differs after loading at TP={tp} PP={pp}"
        logits = [r["logits"] for r in loaded if r["logits"] is not None]
        assert logits, "no last-stage logits"
        for lg in logits:
            assert (lg - saved_logits).abs().max().item() <= 1e-5
