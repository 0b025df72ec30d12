"""The next step's micro-batches built in a background thread: the same batches, in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_lang.training.data import Prefetcher, step_microbatches

pytestmark = pytest.mark.unit


class Samples:
    """A dataset whose items name their index; ``fail_at`` raises there."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at, self.reads = n, fail_at, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise ValueError(f"sample {i} is broken")
        self.reads.append(i)
        return {"tokens": np.full(4, i, dtype=np.int64), "labels": np.arange(4) + i}


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("dp_rank", [0, 1])
def test_prefetched_batches_equal_the_direct_ones_step_after_step(dp_rank):
    ds = Samples(64)
    p = Prefetcher(ds, global_batch=8, micro_batch=2, dp_rank=dp_rank, dp_size=2)
    try:
        for first in (0, 8, 16, 40, 48, 56):  # a jump (resume) after 16
            got, waited = p.get(first)
            assert waited >= 0
            _same(got, step_microbatches(ds, first, 8, 2, dp_rank, 2))
        assert p._next is None  # nothing is built past the end of the dataset
    finally:
        p.close()


def test_the_next_step_is_built_before_it_is_asked_for():
    ds = Samples(32)
    p = Prefetcher(ds, global_batch=8, micro_batch=4, dp_rank=0, dp_size=1)
    try:
        p.get(0)
        p._next[1].result()  # the worker finished step 2 on its own
        assert set(range(8, 16)) <= set(ds.reads)
    finally:
        p.close()


def test_an_error_in_the_worker_reaches_the_step_that_needs_the_batch():
    ds = Samples(32, fail_at=12)
    p = Prefetcher(ds, global_batch=8, micro_batch=4, dp_rank=0, dp_size=1)
    try:
        p.get(0)  # fine; step 2 (samples 8-15) fails in the background
        with pytest.raises(ValueError, match="sample 12 is broken"):
            p.get(8)
    finally:
        p.close()
