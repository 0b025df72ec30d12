"""The hybrid causal + MNTP batch builder: masking statistics, label shift, attention masks,
determinism, the share of MNTP sequences, tokenizer ids and start-up checks."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from megatron_lang.data import objectives as obj

pytestmark = pytest.mark.unit

EOD, BOS, PAD, MASK, VOCAB = 0, 1, 2, 3, 1000
SPECIAL = frozenset({EOD, BOS, PAD})


def _spec(**kw) -> obj.MaskingSpec:
    base = dict(mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, eod_id=EOD, seed=7)
    return obj.MaskingSpec(**{**base, **kw})


def _text(index: int, n: int) -> np.ndarray:
    """Random ordinary tokens with a BOS after every EOD, documents of 20..150 tokens."""
    rng = np.random.default_rng(10_000 + index)
    text = rng.integers(4, VOCAB, size=n)
    pos = 0
    while True:
        pos += int(rng.integers(20, 150))
        if pos + 1 >= n:
            break
        text[pos], text[pos + 1] = EOD, BOS
    return text


def _item(index: int, s: int = 256) -> dict:
    text = torch.from_numpy(_text(index, s + 1))
    return {
        "tokens": text[:-1].clone(),
        "labels": text[1:].clone(),
        "loss_mask": torch.ones(s),
        "position_ids": torch.arange(s),
        "dataset_id": 0,
    }


def test_masking_statistics_over_many_samples():
    spec = _spec(fraction=1.0)
    lengths, kinds = Counter(), Counter()
    covered = maskable_total = 0
    for i in range(300):
        tokens = _text(i, 512)
        rng = obj.sample_rng(spec.seed, i)
        result = obj.mask_tokens(tokens, spec, rng)
        ok = obj.maskable(tokens, spec.special_ids)
        n_ok, n_masked = int(ok.sum()), int(result.masked.sum())
        target = round(n_ok / 6)
        # coverage stops at the first span reaching the target: overshoot < span_max
        assert 0 <= n_masked - target <= spec.span_max - 1, (i, n_masked, target)
        covered, maskable_total = covered + n_masked, maskable_total + n_ok
        # special tokens (EOD/BOS here) and position 0 are never masked
        assert not np.isin(tokens[result.masked], list(SPECIAL)).any()
        assert not result.masked[0]
        # spans are separate contiguous runs of the drawn lengths
        runs = np.flatnonzero(np.diff(np.r_[0, result.masked.astype(int), 0]))
        starts, ends = runs[::2], runs[1::2]
        assert sorted(zip(starts.tolist(), (ends - starts).tolist())) == sorted(result.spans)
        for (start, length), kind in zip(result.spans, result.kinds):
            lengths[length] += 1
            kinds[kind] += 1
            got, orig = result.inputs[start : start + length], tokens[start : start + length]
            if kind == "mask":
                assert (got == MASK).all()
            elif kind == "keep":
                assert (got == orig).all()
            else:  # random replacements are ordinary tokens
                assert not np.isin(got, list(SPECIAL | {MASK})).any()
        assert (result.inputs[~result.masked] == tokens[~result.masked]).all()
    n_spans = sum(lengths.values())
    assert n_spans > 10_000
    # ~1/6 coverage: the per-sample overshoot is < 3 tokens of ~510, so the pooled share
    # may exceed 1/6 by at most 0.004; 0.01 leaves room and would catch e.g. 1/5 or 1/7
    assert abs(covered / maskable_total - 1 / 6) < 0.01
    # lengths uniform over 1..3 and 80/10/10 replacement: binomial sd <= 0.004 with
    # >10k spans, the tolerances are >= 4 sd
    assert set(lengths) == {1, 2, 3}
    for length in (1, 2, 3):
        assert abs(lengths[length] / n_spans - 1 / 3) < 0.02, lengths
    assert abs(kinds["mask"] / n_spans - 0.8) < 0.02, kinds
    assert abs(kinds["random"] / n_spans - 0.1) < 0.015, kinds
    assert abs(kinds["keep"] / n_spans - 0.1) < 0.015, kinds


def test_span_length_settings_are_respected():
    spec = _spec(fraction=1.0, span_min=2, span_max=5, ratio=0.3)
    seen = Counter()
    for i in range(50):
        result = obj.mask_tokens(_text(i, 256), spec, obj.sample_rng(1, i))
        seen.update(length for _, length in result.spans)
    assert set(seen) == {2, 3, 4, 5}


def test_label_shift_and_loss_mask():
    spec = _spec(fraction=1.0)
    for index in range(20):
        item = _item(index)
        out = obj.apply_objective(item, index, spec)
        rng = obj.sample_rng(spec.seed, index)
        assert obj.is_mntp_sample(rng, spec.fraction)
        masked = obj.mask_tokens(item["tokens"].numpy(), spec, rng).masked
        assert out["mntp"].item() == 1
        # labels are the original next tokens: label j-1 is the original token j
        assert torch.equal(out["labels"], item["labels"])
        assert torch.equal(out["labels"][:-1], item["tokens"][1:])
        # the loss is exactly at j-1 for every masked input position j
        expected = {j - 1 for j in np.flatnonzero(masked)}
        assert set(torch.nonzero(out["loss_mask"]).view(-1).tolist()) == expected
        assert expected and (out["tokens"] != item["tokens"]).any()
        assert out["loss_mask"].sum() == masked.sum()


def _doc_ids_slow(tokens: list[int]) -> list[int]:
    doc, out = 0, []
    for t in tokens:
        out.append(doc)
        doc += t == EOD
    return out


def test_attention_masks_bidirectional_per_document_and_causal():
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    item = _item(3, s=400)
    tokens = item["tokens"].tolist()
    assert tokens.count(EOD) >= 2
    doc = _doc_ids_slow(tokens)
    s = len(tokens)
    mntp = obj.apply_objective(item, 3, _spec(fraction=1.0))["attention_mask"]
    causal = obj.apply_objective(item, 3, _spec(fraction=0.0))["attention_mask"]
    doc_causal = obj.apply_objective(item, 3, _spec(fraction=0.0, document_causal=True))
    assert mntp.shape == causal.shape == (1, s, s) and mntp.dtype == torch.bool
    for q in range(s):
        for k in range(s):
            assert bool(mntp[0, q, k]) == (doc[q] != doc[k])  # True = masked out
            assert bool(causal[0, q, k]) == (k > q)
    # document-causal equals megatron-core's own reset_attention_mask
    reference, _, _ = _get_ltor_masks_and_position_ids(item["tokens"], EOD, True, True, False, True)
    assert torch.equal(doc_causal["attention_mask"], reference)
    assert not torch.equal(doc_causal["attention_mask"], causal)


def test_causal_samples_are_unchanged():
    item = _item(5)
    out = obj.apply_objective(item, 5, _spec(fraction=0.0))
    assert out["mntp"].item() == 0
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        assert torch.equal(out[key], item[key])


def test_masking_is_deterministic_per_sample_index():
    spec = _spec(fraction=1.0)
    a1 = obj.apply_objective(_item(0), 11, spec)
    a2 = obj.apply_objective(_item(0), 11, spec)
    b = obj.apply_objective(_item(0), 12, spec)  # same tokens, another global index
    assert torch.equal(a1["tokens"], a2["tokens"]) and torch.equal(a1["loss_mask"], a2["loss_mask"])
    assert not torch.equal(a1["loss_mask"], b["loss_mask"])
    # another job seed masks differently too
    c = obj.apply_objective(_item(0), 11, _spec(fraction=1.0, seed=8))
    assert not torch.equal(a1["loss_mask"], c["loss_mask"])


def test_share_of_mntp_sequences_follows_the_fraction():
    for fraction in (0.1, 0.5):
        chosen = [obj.is_mntp_sample(obj.sample_rng(1234, i), fraction) for i in range(5000)]
        # binomial sd <= 0.0071 at n=5000; 0.03 is > 4 sd
        assert abs(np.mean(chosen) - fraction) < 0.03
    assert not any(obj.is_mntp_sample(obj.sample_rng(1, i), 0.0) for i in range(500))
    assert all(obj.is_mntp_sample(obj.sample_rng(1, i), 1.0) for i in range(500))
    ds = obj.ObjectiveDataset([_item(i % 4, s=32) for i in range(400)], _spec(fraction=0.1))
    flags = [ds[i]["mntp"].item() for i in range(len(ds))]
    assert 0.05 < np.mean(flags) < 0.15


def _hf_tokenizer(path, with_mask: bool) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="c"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"] + (["<mask>"] if with_mask else []))
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>", **({"mask_token": "<mask>"} if with_mask else {})}
    (path / "tokenizer_config.json").write_text(json.dumps(config))


def test_tokenizer_ids_and_missing_mask_token_error(tmp_path):
    from megatron_lang.config import load_job_config
    from megatron_lang.training.build import StartupError
    from megatron_lang.training.data import masking_spec

    _hf_tokenizer(tmp_path / "with", with_mask=True)
    _hf_tokenizer(tmp_path / "without", with_mask=False)
    special, mask_id = obj.tokenizer_special_ids(tmp_path / "with")
    assert mask_id == 4 and special == {0, 4}
    cfg = load_job_config(None, ["objective.mntp_fraction=0.1"])
    spec = masking_spec(cfg, str(tmp_path / "with"), eod=0, vocab=5)
    assert spec.mask_id == 4 and set(spec.random_ids.tolist()) == {1, 2, 3}
    with pytest.raises(StartupError, match=r"without.*extend_vocab\.py") as e:
        masking_spec(cfg, str(tmp_path / "without"), eod=0, vocab=4)
    assert "has no mask_token (e.g. <mask>);" in str(e.value)
    # an explicit objective.mask_token names an existing token
    cfg2 = load_job_config(None, ["objective.mntp_fraction=0.1", "objective.mask_token=b"])
    assert masking_spec(cfg2, str(tmp_path / "without"), eod=0, vocab=4).mask_id == 2


def test_startup_rejects_bad_objective_values_and_transformer_engine(monkeypatch):
    from megatron_lang.config import get_preset, load_job_config
    from megatron_lang.training import build

    arch = get_preset("tiny-llama")

    def check(*overrides):
        cfg = load_job_config(None, ["data.global_batch_size=8", *overrides])
        return build.check_startup(cfg, arch, 1, hardware=True)

    check("objective.mntp_fraction=0.1")  # fine on CPU (local spec)
    for bad, message in [
        (["objective.mntp_fraction=1.5"], "mntp_fraction"),
        (["objective.bidirectional=true", "objective.mntp_fraction=0.3"], "bidirectional"),
        (["objective.mntp_fraction=0.1", "objective.mask_span_min=4"], "mask_span_min"),
        (["objective.mntp_fraction=0.1", "objective.mask_ratio=0"], "mask_ratio"),
    ]:
        with pytest.raises(build.StartupError, match=message):
            check(*bad)
    monkeypatch.setattr(build, "transformer_engine_available", lambda: True)
    check()  # the default causal objective is fine with TE
    # with TE the layers keep TE linears and get the local core attention (models/gpt.py)
    check("objective.bidirectional=true")
    with pytest.raises(build.StartupError, match="no context parallelism"):
        cfg = load_job_config(
            None,
            [
                "data.global_batch_size=8",
                "objective.bidirectional=true",
                "parallel.context_parallel=2",
            ],
        )
        build.check_startup(cfg, arch, 2, hardware=True)


def test_loss_report_splits_causal_and_mntp():
    from megatron_lang.training import step

    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    loss_mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    total, tokens, out = step.loss_func(
        loss_mask, torch.tensor([0, 1]), 2, losses, mntp=torch.tensor([0, 1])
    )
    assert total.item() == 11.0 and tokens.item() == 4
    summary = step.summarize(out["report"], ["a", "b"], objective=True)
    assert summary["loss/causal"] == 2.0 and summary["loss/mntp"] == 5.0
    assert summary["mntp_tokens"] == 1.0 and summary["mntp_samples"] == 1.0
    assert summary["loss"] == 11.0 / 4
    assert "loss/mntp" not in step.summarize(out["report"], ["a", "b"])
