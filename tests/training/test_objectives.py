"""Hybrid causal + MNTP and bidirectional training on the tiny model (gloo ranks).

- TP=2 makes the same masked/causal choices and losses as TP=1;
- the causal and MNTP losses are logged separately and both fall;
- a run resumed from a copied checkpoint repeats the losses bitwise;
- bidirectional attention lets position 0 see later tokens (causal does not);
  a bidirectionally trained checkpoint gives [N, hidden] mean-pooled embeddings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed

STEPS = 12
HYBRID = {"objective.mntp_fraction": 0.5, "train.steps": STEPS}


def _overrides(blend, start, **extra) -> list[str]:
    return _jobs.base_overrides(
        blend, **{"model.checkpoint": start, "model.arch.vocab_size": 513, **HYBRID, **extra}
    )


def _train_steps(history: list[dict]) -> list[dict]:
    return [h for h in history if "loss" in h]


@pytest.fixture(scope="module")
def tp1_run(mask_blend, mask_start, tmp_path_factory) -> tuple[list[dict], Path]:
    ckpt = tmp_path_factory.mktemp("hybrid") / "ckpt"
    args = _overrides(
        mask_blend, mask_start, **{"checkpoint.dir": ckpt, "checkpoint.save_interval": 4}
    )
    return _train_steps(run_distributed(_jobs.train, 1, args)[0]), ckpt


def test_hybrid_losses_are_logged_separately_and_fall(tp1_run):
    steps, _ = tp1_run
    assert [h["step"] for h in steps] == list(range(1, STEPS + 1))
    for h in steps:
        assert {"loss/causal", "loss/mntp", "mntp_tokens", "mntp_samples"} <= set(h)
        assert 0 < h["mntp_samples"] < 8 and h["mntp_tokens"] > 0
    # the per-step loss is the token-weighted mix of the two
    h = steps[0]
    assert (
        min(h["loss/causal"], h["loss/mntp"]) <= h["loss"] <= max(h["loss/causal"], h["loss/mntp"])
    )
    # MNTP samples differ from step to step (seeded by the global sample index)
    assert len({h["mntp_tokens"] for h in steps}) > 1
    for key in ("loss/causal", "loss/mntp"):
        first = np.mean([h[key] for h in steps[:3]])
        last = np.mean([h[key] for h in steps[-3:]])
        assert last < first - 0.5, (key, first, last)


def test_tp2_matches_tp1_choices_and_losses(mask_blend, mask_start, tp1_run):
    ref, _ = tp1_run
    args = _overrides(mask_blend, mask_start, **{"parallel.tensor_parallel": 2})
    for history in run_distributed(_jobs.train, 2, args):
        got = _train_steps(history)
        assert len(got) == STEPS
        for a, b in zip(got, ref):
            assert a["mntp_samples"] == b["mntp_samples"] and a["mntp_tokens"] == b["mntp_tokens"]
            for key in ("loss", "loss/causal", "loss/mntp"):
                assert abs(a[key] - b[key]) <= 1e-4, (a["step"], key, a[key], b[key])


def test_resume_repeats_hybrid_losses_bitwise(mask_blend, mask_start, tp1_run, tmp_path):
    ref, ckpt = tp1_run
    d = tmp_path / "again"
    d.mkdir()
    shutil.copytree(ckpt / "iter_0000004", d / "iter_0000004")
    (d / "latest").write_text("iter_0000004\n")
    args = _overrides(mask_blend, mask_start, **{"checkpoint.dir": d})
    resumed = _train_steps(run_distributed(_jobs.train, 1, args)[0])
    assert [h["step"] for h in resumed] == list(range(5, STEPS + 1))
    for a, b in zip(resumed, ref[4:]):
        for key in ("loss", "loss/causal", "loss/mntp", "mntp_tokens"):
            assert a[key] == b[key], (a["step"], key)


def _position0_dependence(start: str) -> dict[str, float]:
    """Change token 5 of a sequence: how much does position 0's final hidden state move?"""
    from megatron.core import parallel_state

    from megatron_lang.analysis.embeddings import final_hidden_states
    from megatron_lang.conversion.megatron_model import load_model
    from megatron_lang.platform import ParallelLayout, initialize_model_parallel, set_seed

    initialize_model_parallel(ParallelLayout(), num_layers=2, num_attention_heads=4)
    try:
        set_seed(0)
        model, _ = load_model(start)
        a = torch.randint(3, 500, (1, 12))
        b = a.clone()
        b[0, 5] = (a[0, 5] + 7) % 500
        valid = torch.ones(1, 12, dtype=torch.bool)
        out = {}
        for name, bidirectional in (("bidirectional", True), ("causal", False)):
            ha = final_hidden_states(model, a, valid, bidirectional)
            hb = final_hidden_states(model, b, valid, bidirectional)
            out[name] = float((ha[0, 0] - hb[0, 0]).abs().max())
            out[name + "_at_5"] = float((ha[0, 5] - hb[0, 5]).abs().max())
    finally:
        parallel_state.destroy_model_parallel()
    return out


def test_bidirectional_position0_sees_later_tokens(mask_start):
    from megatron_lang.checkpointing.metadata import load_metadata

    arch = load_metadata(mask_start).arch
    assert (arch.num_layers, arch.num_attention_heads) == (2, 4)
    got = run_distributed(_position0_dependence, 1, mask_start)[0]
    assert got["bidirectional"] > 1e-4
    assert got["causal"] == 0.0
    assert got["causal_at_5"] > 1e-4  # the change itself is visible causally


def _bidirectional_run_and_embed(overrides: list[str], out_dir: str) -> dict:
    from megatron_lang.analysis.embeddings import sequence_embeddings
    from tools.analysis import embed

    history = _jobs.train(overrides)
    ckpt = next(Path(out_dir).glob("iter_*"))
    texts = ["Hej med dig, hvordan går det?", "Eg skriv nynorsk.", "Hej med dig, hvordan går det?"]
    emb = sequence_embeddings(ckpt, texts, bidirectional=True)
    causal = sequence_embeddings(ckpt, texts[:1], bidirectional=False)
    (Path(out_dir) / "texts.txt").write_text("\n".join(texts) + "\n")
    code = embed.main(
        [str(ckpt), str(Path(out_dir) / "texts.txt"), "--out", str(Path(out_dir) / "e.npy")]
    )
    return {"history": history, "emb": emb, "causal": causal, "code": code}


def test_bidirectional_training_and_sequence_embeddings(mask_blend, mask_start, tmp_path):
    ckpt = tmp_path / "bidir"
    args = _overrides(
        mask_blend,
        mask_start,
        **{
            "objective.bidirectional": True,
            "objective.mntp_fraction": 0.0,
            "train.steps": 3,
            "train.eval_steps": 1,
            "checkpoint.dir": ckpt,
        },
    )
    got = run_distributed(_bidirectional_run_and_embed, 1, args, str(ckpt))[0]
    steps = _train_steps(got["history"])
    assert len(steps) == 3
    for h in steps:  # every sequence is an MNTP sample: no causal loss tokens
        assert h["mntp_samples"] == 8 and "loss/causal" not in h
        assert h["loss"] == pytest.approx(h["loss/mntp"])
    assert any("valid/da/da_gimp/loss" in h for h in got["history"])
    emb = got["emb"]
    assert emb.shape == (3, 64) and torch.isfinite(emb).all()
    assert torch.allclose(emb[0], emb[2], atol=1e-6)  # identical texts
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    assert not torch.allclose(emb[0], got["causal"][0], atol=1e-4)  # attention matters
    assert got["code"] == 0
    saved = np.load(ckpt / "e.npy")
    assert saved.shape == (3, 64) and np.allclose(saved, emb.numpy(), atol=1e-6)
