"""Training items of packed chat samples, position by position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_lang.data.chat.dataset import build_item

pytestmark = pytest.mark.unit


def test_item_labels_mask_segments_positions():
    # two conversations of 4 and 3 tokens, padded to 10; stored masks mark answers
    ids = np.array([10, 11, 12, 13, 20, 21, 22])
    mask = np.array([0, 0, 1, 1, 0, 1, 1], dtype=np.float32)
    item = build_item(ids, mask, np.array([4, 3]), 10, pad_id=0)
    assert item["tokens"].tolist() == [10, 11, 12, 13, 20, 21, 22, 0, 0, 0]
    # the label of t is the next token of the same conversation; never across
    assert item["labels"].tolist() == [11, 12, 13, 0, 21, 22, 0, 0, 0, 0]
    # trained where the *next* token is an answer token; 0 at each conversation's end
    assert item["loss_mask"].tolist() == [0, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert item["segments"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert item["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]


def test_full_loss_never_predicts_the_next_conversation():
    ids = np.array([1, 5, 6, 1, 7, 8])
    mask = np.ones(6, dtype=np.float32)  # loss mode "full": every token a target
    item = build_item(ids, mask, np.array([3, 3]), 6, pad_id=0)
    assert item["loss_mask"].tolist() == [1, 1, 0, 1, 1, 0]


def test_dense_mask_is_block_causal():
    ids = np.array([1, 2, 3, 4, 5])
    item = build_item(ids, np.ones(5, np.float32), np.array([2, 3]), 6, 0, segments=False)
    allowed = ~item["attention_mask"][0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    for lo, hi in ((0, 2), (2, 5), (5, 6)):
        expected[lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
    assert torch.equal(allowed, expected)
