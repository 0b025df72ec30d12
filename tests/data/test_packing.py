"""Packed micro-batches: segments -> cu_seqlens, per-segment kinds, no [S, S] mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_lang.data import objectives as obj
from megatron_lang.data.packing import pack_microbatch

pytestmark = pytest.mark.unit


def test_segments_become_cu_seqlens_and_kinds_per_sample():
    # sample 0: documents of 3 and 5 tokens (MNTP); sample 1: one segment (causal)
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0] * 8], dtype=torch.int32)
    batch = {"tokens": torch.zeros(2, 8), "segments": segments, "mntp": torch.tensor([1, 0])}
    out = pack_microbatch(batch)
    assert "segments" not in out
    assert out["cu_seqlens"].tolist() == [0, 3, 8, 16]
    assert out["cu_seqlens"].dtype == torch.int32
    assert out["segment_bidirectional"].tolist() == [True, True, False]
    assert out["max_seqlen"] == 8
    # host copies for the attention's segment loops (no device sync on GPUs)
    assert out["segments_host"] == ([0, 3, 8, 16], [True, True, False])


def test_equal_segment_ids_in_two_samples_stay_two_segments():
    segments = torch.zeros(3, 4, dtype=torch.int32)  # every sample starts a segment
    out = pack_microbatch({"segments": segments})
    assert out["cu_seqlens"].tolist() == [0, 4, 8, 12]
    assert not out["segment_bidirectional"].any()  # no mntp flag: causal


def test_a_batch_without_segments_is_unchanged():
    batch = {"tokens": torch.zeros(2, 4)}
    assert pack_microbatch(batch) is batch


def test_packed_items_carry_the_segments_of_the_dense_mask():
    """The packed item describes exactly the dense mask's blocks (per sample kind)."""
    eod = 7
    tokens = np.array([3, 4, eod, 5, 6, 8, eod, 9, 10, 11, 12, 13], dtype=np.int64)
    item = {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(np.roll(tokens, -1)),
        "loss_mask": torch.ones(12),
        "position_ids": torch.arange(12),
    }
    for fraction, doc in ((1.0, False), (0.0, True), (0.0, False)):
        kw = dict(mask_id=1, vocab_size=20, special_ids=frozenset({0, eod}), eod_id=eod)
        kw.update(fraction=fraction, document_causal=doc, seed=5)
        dense = obj.apply_objective(item, 4, obj.MaskingSpec(**kw))
        packed = obj.apply_objective(item, 4, obj.MaskingSpec(**kw, packed=True))
        assert torch.equal(dense["tokens"], packed["tokens"])  # same masking choices
        assert torch.equal(dense["loss_mask"], packed["loss_mask"])
        batch = pack_microbatch({k: v[None] for k, v in packed.items()})
        # rebuild the dense mask from the segments and compare token by token
        cu = batch["cu_seqlens"].tolist()
        allowed = torch.zeros(12, 12, dtype=torch.bool)
        for i, bidir in enumerate(batch["segment_bidirectional"].tolist()):
            a, b = cu[i], cu[i + 1]
            block = torch.ones(b - a, b - a, dtype=torch.bool)
            allowed[a:b, a:b] = block if bidir else block.tril()
        assert torch.equal(~allowed, dense["attention_mask"][0]), (fraction, doc)
