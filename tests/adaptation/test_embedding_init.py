"""Rows of new tokens: mean, random, FOCUS, on toy vocabularies whose answers are checked by hand."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.adaptation.embedding_init import (
    mean_init,
    old_token_ids,
    random_init,
    token_bytes,
)
from megatron_lang.adaptation.focus import FocusInit, FocusOptions, sparsemax
from megatron_lang.conversion.vocab import VocabRemap
from tests.adaptation import _toy

# a=[1,0] b=[0,1] c=[2,2] d=[4,0]
OLD_VH = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]])


def _reordered():
    """Old a,b,c,d = 0..3; the new vocabulary puts the merges first: cd=0, ab=1, a=2 ... d=5.

    New token ``cd`` gets new id 0, the old id of ``a``, a source of new token ``ab``.
    """
    old = _toy.plain_bpe({"a": 0, "b": 1, "c": 2, "d": 3}, [])
    new = _toy.plain_bpe(
        {"cd": 0, "ab": 1, "a": 2, "b": 3, "c": 4, "d": 5}, [("c", "d"), ("a", "b")]
    )
    return old, new


def _in_place_mean(old_VH, remap):
    """A buggy remap: one buffer, new rows written in id order over rows still used as sources."""
    w = torch.zeros((remap.new_size, old_VH.shape[1]))
    w[: old_VH.shape[0]] = old_VH
    for tok, nid in zip(remap.new_tokens, remap.new_ids):
        w[nid] = w[[ord(ch) - ord("a") for ch in tok]].mean(dim=0)  # old id of each letter
    for n, o in zip(remap.kept_new, remap.kept_old):
        w[n] = w[o]
    return w


@pytest.mark.unit
def test_mean_rows_by_hand_and_no_in_place_aliasing():
    old, new = _reordered()
    remap = VocabRemap(old, new, "mean")
    assert remap.new_tokens == ["cd", "ab"] and remap.new_ids == [0, 1]
    src = OLD_VH.clone()
    out = remap.apply(src, "model.embed_tokens.weight")
    # cd = (c+d)/2 = [3,1]; ab = (a+b)/2 = [0.5,0.5]; a..d keep their rows at new ids 2..5
    expected = torch.tensor([[3.0, 1.0], [0.5, 0.5], [1, 0], [0, 1], [2, 2], [4, 0]])
    assert torch.equal(out, expected)
    assert torch.equal(src, OLD_VH)  # the caller's matrix is untouched
    # the in-place variant reads row 0 after "cd" overwrote it: ab = (cd + b)/2 = [1.5, 1]
    buggy = _in_place_mean(OLD_VH, remap)
    assert torch.equal(buggy[1], torch.tensor([1.5, 1.0]))
    assert not torch.equal(buggy, out)


@pytest.mark.unit
def test_mean_init_does_not_write_into_its_input():
    old, new = _reordered()
    _, ctx = _toy.context(old, new, OLD_VH.clone())
    before = ctx.old_weight.clone()
    rows = mean_init(ctx)
    assert torch.equal(rows, torch.tensor([[3.0, 1.0], [0.5, 0.5]]))
    assert torch.equal(ctx.old_weight, before)
    assert rows.data_ptr() != ctx.old_weight.data_ptr()


def _byte_level_pair():
    # old: byte-level characters Ġ h u s Ã ¦ t + the merge "Ġh"
    old_vocab = {"Ġ": 0, "h": 1, "u": 2, "s": 3, "Ã": 4, "¦": 5, "t": 6, "Ġh": 7}
    old = _toy.byte_level_bpe(old_vocab, [("Ġ", "h")])
    new_vocab = {**old_vocab, "us": 8, "Ġhus": 9, "hus": 10, "Ã¦": 11, "ĠÃ": 12}
    new = _toy.byte_level_bpe(
        new_vocab, [("Ġ", "h"), ("u", "s"), ("Ġh", "us"), ("h", "us"), ("Ã", "¦"), ("Ġ", "Ã")]
    )
    return old, new


@pytest.mark.unit
def test_byte_level_markers_and_partial_utf8():
    old, new = _byte_level_pair()
    assert token_bytes("Ġhus", new) == b" hus"
    assert token_bytes("Ã¦", new) == "æ".encode()
    assert token_bytes("ĠÃ", new) == b" \xc3"  # a space and the first byte of "æ"/"ø"/...
    # decode() cannot represent the partial byte: the old code tokenised U+FFFD
    assert new.decode([new.convert_tokens_to_ids("ĠÃ")]) == " \ufffd"
    ids = {t: old_token_ids(token_bytes(t, new), old) for t in ["Ġhus", "hus", "Ã¦", "ĠÃ"]}
    assert ids == {"Ġhus": [7, 2, 3], "hus": [1, 2, 3], "Ã¦": [4, 5], "ĠÃ": [0, 4]}
    old_VH = torch.arange(16.0).view(8, 2)
    _, ctx = _toy.context(old, new, old_VH)
    assert ctx.new_tokens == ["us", "Ġhus", "hus", "Ã¦", "ĠÃ"]
    rows = mean_init(ctx)
    for row, tok in zip(rows, ctx.new_tokens):
        torch.testing.assert_close(row, old_VH[ids.get(tok, [2, 3])].mean(dim=0), rtol=0, atol=0)


@pytest.mark.unit
@pytest.mark.parametrize("legacy", [False, True], ids=["metaspace", "legacy-normalizer"])
def test_sentencepiece_markers_leading_space(legacy):
    pieces = [("<unk>", 0.0), ("▁", -2.0), ("▁h", -3.0), ("us", -3.0), ("h", -3.0),
              ("u", -3.0), ("s", -3.0), ("e", -3.0), ("t", -3.0)]  # fmt: skip
    old = _toy.unigram(pieces, legacy)
    new = _toy.unigram(pieces + [("▁hus", -1.0), ("hus", -1.0), ("▁huset", -0.5)], legacy)
    ids = old.convert_tokens_to_ids
    # "▁hus" is " hus": the old tokenizer sees the word with its leading space
    assert token_bytes("▁hus", new) == b" hus"
    assert old_token_ids(token_bytes("▁hus", new), old) == ids(["▁h", "us"])
    # "hus" is word-internal: no dummy prefix (the full pipeline adds one)
    assert old_token_ids(token_bytes("hus", new), old) == ids(["h", "us"])
    assert old.convert_ids_to_tokens(old.encode("hus", add_special_tokens=False))[0].startswith("▁")
    old_VH = torch.randn(len(pieces), 4, generator=torch.Generator().manual_seed(0))
    _, ctx = _toy.context(old, new, old_VH)
    rows = dict(zip(ctx.new_tokens, mean_init(ctx)))
    assert set(rows) == {"▁hus", "hus", "▁huset"}
    torch.testing.assert_close(rows["▁hus"], old_VH[ids(["▁h", "us"])].mean(0))
    torch.testing.assert_close(rows["hus"], old_VH[ids(["h", "us"])].mean(0))
    torch.testing.assert_close(rows["▁huset"], old_VH[ids(["▁h", "us", "e", "t"])].mean(0))


@pytest.mark.unit
def test_added_tokens_are_plain_text():
    old, _ = _byte_level_pair()
    new, _ = _byte_level_pair()
    assert new.add_tokens(["hust", " hus"]) == 2
    old_VH = torch.arange(16.0).view(8, 2)
    _, ctx = _toy.context(old, new, old_VH)
    rows = dict(zip(ctx.new_tokens, mean_init(ctx)))
    torch.testing.assert_close(rows["hust"], old_VH[[1, 2, 3, 6]].mean(0))
    torch.testing.assert_close(rows[" hus"], old_VH[[7, 2, 3]].mean(0))


@pytest.mark.unit
def test_random_init_statistics_seeded_and_per_matrix():
    old = _toy.word_level(["a", "b"])
    new = _toy.word_level(["a", "b"] + [f"n{i}" for i in range(20000)])
    g = torch.Generator().manual_seed(3)
    emb_VH = torch.randn(3, 2, generator=g) * torch.tensor([1.0, 5.0]) + torch.tensor([2.0, -1.0])
    head_VH = emb_VH * 10
    _, ctx = _toy.context(old, new, emb_VH.clone())
    rows = random_init(ctx, seed=7)
    assert torch.equal(rows, random_init(ctx, seed=7))  # seeded
    assert not torch.equal(rows, random_init(ctx, seed=8))
    assert torch.equal(ctx.old_weight, emb_VH)
    torch.testing.assert_close(rows.mean(0), emb_VH.mean(0), atol=0.1 * emb_VH.std(0).max(), rtol=0)
    torch.testing.assert_close(rows.std(0), emb_VH.std(0), rtol=0.05, atol=0)
    _, head_ctx = _toy.context(old, new, head_VH, "lm_head.weight")
    head_rows = random_init(head_ctx, seed=7)
    torch.testing.assert_close(head_rows.std(0), head_VH.std(0), rtol=0.05, atol=0)
    assert not torch.allclose(head_rows, rows * 10)  # its own random stream


@pytest.mark.unit
def test_sparsemax():
    p = sparsemax(torch.tensor([[0.9, 0.8, 0.1, -0.5], [3.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2]]))
    # row 0: tau = (0.9 + 0.8 - 1) / 2 = 0.35 -> [0.55, 0.45, 0, 0]; row 1: one-hot; row 2: uniform
    torch.testing.assert_close(p[0], torch.tensor([0.55, 0.45, 0.0, 0.0]))
    assert torch.equal(p[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(p[2], torch.full((4,), 0.25))
    z = torch.randn(50, 30, generator=torch.Generator().manual_seed(0))
    q = sparsemax(z)
    assert (q >= 0).all() and torch.allclose(q.sum(1), torch.ones(50))
    assert torch.equal(q.argmax(1), z.argmax(1))


def _focus_setup(tmp_path):
    """Old words; new word "kat" always stands where "cat" stands; "zzz" never in the corpus."""
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "in", "mat", "park", "big", "red"]
    old = _toy.word_level(words)
    new = _toy.word_level(["kat", "zzz"] + words)  # reordered: new ids 1, 2 are old "the", "a"
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(1500):
        animal = rng.choice(["cat", "kat"])
        lines.append(f"the {rng.choice(['big', 'red'])} {animal} sat on the mat")
        lines.append(f"a dog ran in the {rng.choice(['big', 'red'])} park")
    corpus = _toy.write_jsonl(tmp_path / "corpus.jsonl", lines)
    # sample=1: no sub-sampling; with 13 distinct words every one is "frequent"
    opts = FocusOptions(corpus=corpus, dim=32, epochs=5, min_count=1, sample=1.0)
    return old, new, opts


@pytest.mark.unit
def test_focus_weights_sparsemax_and_nearest_context(tmp_path):
    old, new, opts = _focus_setup(tmp_path)
    old_VH = torch.randn(len(old), 8, generator=torch.Generator().manual_seed(0))
    remap, ctx = _toy.context(old, new, old_VH.clone())
    assert ctx.new_tokens == ["kat", "zzz"]
    init = FocusInit(opts)
    w = init.weights(ctx)
    assert w.support[1] is None  # "zzz" has no vector: fallback
    ids, weights = w.support[0]
    assert (weights > 0).all() and abs(float(weights.sum()) - 1.0) < 1e-9
    assert 0 < len(ids) < w.overlap_with_vectors  # sparse: a few of the candidates
    cat = old.convert_tokens_to_ids("cat")
    assert int(ids[weights.argmax()]) == cat
    rows = init(ctx)
    torch.testing.assert_close(rows[0], (weights.double() @ old_VH[ids].double()).float())
    assert int(torch.cdist(rows[:1], old_VH).argmin()) == cat  # closest old row: "cat"
    torch.testing.assert_close(rows[1], old_VH.mean(0))  # fallback mean: "zzz" is [UNK] only
    assert torch.equal(ctx.old_weight, old_VH)
    # the remap keeps old rows and puts FOCUS rows at the new ids (which alias old ids 1, 2)
    out = VocabRemap(old, new, init).apply(old_VH, "model.embed_tokens.weight")
    assert torch.equal(out[remap.kept_new], old_VH[remap.kept_old])
    assert torch.equal(out[remap.new_ids], rows)


@pytest.mark.unit
@pytest.mark.parametrize("method", ["mean", "random", "focus"])
def test_untied_matrices_initialised_each_from_its_own(tmp_path, method):
    old, new, opts = _focus_setup(tmp_path)
    g = torch.Generator().manual_seed(1)
    emb_VH, head_VH = torch.randn(len(old), 4, generator=g), torch.randn(len(old), 4, generator=g)
    init = {"mean": "mean", "random": "random", "focus": FocusInit(opts)}[method]
    remap = VocabRemap(old, new, init)
    emb = remap.apply(emb_VH, "model.embed_tokens.weight")
    head = remap.apply(head_VH, "lm_head.weight")
    for name, w_VH, out in (("model.embed_tokens.weight", emb_VH, emb), ("lm_head.weight", head_VH, head)):  # fmt: skip
        _, ctx = _toy.context(old, new, w_VH, name)
        expected = {"mean": mean_init, "random": random_init, "focus": init}[method](ctx)
        assert torch.equal(out[remap.new_ids], expected), name
        assert torch.equal(out[remap.kept_new], w_VH[remap.kept_old])
    if method == "focus":  # the same weights, applied to each matrix
        ids, weights = init.weights(ctx).support[0]
        torch.testing.assert_close(emb[remap.new_ids[0]], (weights @ emb_VH[ids].double()).float())
        torch.testing.assert_close(
            head[remap.new_ids[0]], (weights @ head_VH[ids].double()).float()
        )
    assert not torch.allclose(emb[remap.new_ids], head[remap.new_ids])
