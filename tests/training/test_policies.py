"""Non-finite losses skip the step (and halt past the limit); document-boundary attention."""

from __future__ import annotations

import math

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed


def test_nan_loss_skips_the_step_and_training_goes_on(tiny_blend):
    args = _jobs.base_overrides(tiny_blend, **{"train.steps": 6})
    history = run_distributed(_jobs.train_with_nan_steps, 1, args, [3], 4)[0]
    train = [h for h in history if "loss" in h]
    assert [h["step"] for h in train] == [1, 2, 3, 4, 5, 6]
    assert math.isnan(train[2]["loss"]) and "grad_norm" not in train[2]
    assert [h["skipped_steps"] for h in train] == [0, 0, 1, 1, 1, 1]
    assert all(math.isfinite(h["loss"]) for h in train[3:])
    # the skipped step did not advance the learning-rate schedule
    assert train[2]["lr"] == train[1]["lr"] != train[3]["lr"]


def test_too_many_nan_steps_halt_the_run(tiny_blend):
    args = _jobs.base_overrides(tiny_blend, **{"train.steps": 6, "train.max_skipped_steps": 1})
    result = run_distributed(_jobs.train_with_nan_steps, 1, args, [2, 4], 4)[0]
    assert result.startswith(
        "2 steps skipped for a non-finite loss or gradient (train.max_skipped_steps=1); "
        "last: step 4, loss is nan"
    ), result


def test_document_attention_packs_documents_as_causal_segments(tiny_blend):
    args = _jobs.base_overrides(tiny_blend, **{"data.document_attention": True})
    out = run_distributed(_jobs.document_batches, 1, args)[0]
    b, eod = out["batch"], out["eod"]
    assert "attention_mask" not in b and "segments" not in b  # no [S, S] mask is built
    n, s = b["tokens"].shape
    flat = b["tokens"].reshape(-1)
    # a segment starts at every sample start and after every EOD inside a sample
    want = sorted(
        {i * s for i in range(n)}
        | {int(p) + 1 for p in (flat == eod).nonzero() if (int(p) + 1) % s}
    )
    assert b["cu_seqlens"].tolist() == want + [n * s]
    assert len(want) > n, "some sample should contain a document boundary"
    assert not b["segment_bidirectional"].any()  # document-causal
    assert b["max_seqlen"] == int(b["cu_seqlens"].diff().max())
    history = run_distributed(_jobs.train, 1, args + ["train.steps=3"])[0]
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)


def test_dense_document_attention_masks_across_documents_and_resets_positions(tiny_blend):
    args = _jobs.base_overrides(
        tiny_blend, **{"data.document_attention": True, "model.attention": "dense"}
    )
    out = run_distributed(_jobs.document_batches, 1, args)[0]
    b, eod = out["batch"], out["eod"]
    inner = [
        (i, int(e))
        for i in range(len(b["tokens"]))
        for e in (b["tokens"][i][:-1] == eod).nonzero().flatten()
    ]
    assert inner, "some sample should contain a document boundary"
    i, e = inner[0]
    pos, mask = b["position_ids"][i], b["attention_mask"][i, 0]
    assert pos[e + 1] == 0 and pos[e] == e  # positions restart after the EOD
    # mask True = blocked: the token after the boundary cannot see the previous document
    assert mask[e + 1, : e + 1].all() and not mask[e + 1, e + 1]
    assert not mask[e, : e + 1].any()  # inside the first document: plain causal
    assert torch.equal(mask[: e + 1, : e + 1], torch.ones(e + 1, e + 1, dtype=torch.bool).triu(1))
    history = run_distributed(_jobs.train, 1, args + ["train.steps=3"])[0]
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_nan_gradient_with_a_finite_loss_skips_the_step(tiny_blend, dtype):
    # without the check the NaN norm reaches clipping and every weight becomes NaN
    args = _jobs.base_overrides(tiny_blend, **{"train.steps": 5, "model.dtype": dtype})
    history = run_distributed(_jobs.train_with_nan_grads, 1, args, [2], 4)[0]
    train = [h for h in history if "loss" in h]
    assert all(math.isfinite(h["loss"]) for h in train), [h["loss"] for h in train]
    assert math.isnan(train[1]["grad_norm"]) and math.isfinite(train[2]["grad_norm"])
    assert [h["skipped_steps"] for h in train] == [0, 1, 1, 1, 1]
    assert train[1]["lr"] == train[0]["lr"] != train[2]["lr"]  # the schedule did not move


def test_too_many_nan_gradients_halt_the_run(tiny_blend):
    args = _jobs.base_overrides(
        tiny_blend, **{"train.steps": 6, "train.max_skipped_steps": 1, "model.dtype": "bf16"}
    )
    result = run_distributed(_jobs.train_with_nan_grads, 1, args, [2, 3], 4)[0]
    assert result.startswith("2 steps skipped for a non-finite loss or gradient"), result
    assert "last: step 3, gradient norm is nan" in result
