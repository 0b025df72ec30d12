"""The capped blend index: C++ extension against the NumPy reference, and its guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_lang.data.blend import water_fill
from megatron_lang.data.blend_index import (
    UNCAPPED,
    build_capped_blend_index,
    reference_capped_blend_index,
)

pytestmark = pytest.mark.unit


def _random_case(rng: np.random.Generator, binding: bool):
    n = int(rng.integers(1, 9))
    weights = rng.random(n) * rng.choice([1.0, 10.0, 1e-3]) + 1e-6
    size = int(rng.integers(0, 700))
    if binding:  # caps around the fair share, some below it, total still sufficient
        caps = (weights / weights.sum() * size * rng.uniform(0.2, 1.5, n)).astype(np.int64)
        caps[rng.integers(n)] += max(0, size - int(caps.sum()))
    else:
        caps = np.full(n, size + 1, dtype=np.int64)
        if rng.random() < 0.5:
            caps = [None] * n
    return weights, caps, size


@pytest.mark.parametrize("binding", [True, False])
def test_cpp_matches_numpy_reference_bit_for_bit(binding):
    rng = np.random.default_rng(1234 + binding)
    n_binding = 0
    for _ in range(150):
        weights, caps, size = _random_case(rng, binding)
        fast = build_capped_blend_index(weights, caps, size)
        ref = reference_capped_blend_index(weights, caps, size)
        for a, b in zip(fast, ref):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        capped = np.array([UNCAPPED if c is None else c for c in caps])
        n_binding += int(np.any(fast.drawn == capped))
    # the "binding" configurations really exercise exhausted sources
    assert (n_binding > 100) if binding else (n_binding == 0)


def test_ties_and_equal_weights_match_reference():
    for weights, caps, size in [
        ([1.0, 1.0, 1.0], [5, 5, 5], 15),
        ([0.1, 0.1, 0.1, 0.1], [0, 3, 100, 2], 40),
        ([3.0], [7], 7),
        ([0.5, 0.25, 0.25], [1, 1, 100], 0),
    ]:
        fast = build_capped_blend_index(weights, caps, size)
        ref = reference_capped_blend_index(weights, caps, size)
        for a, b in zip(fast, ref):
            np.testing.assert_array_equal(a, b)


def test_caps_are_never_exceeded_and_positions_count_up():
    rng = np.random.default_rng(7)
    for _ in range(50):
        weights, caps, size = _random_case(rng, binding=True)
        idx = build_capped_blend_index(weights, caps, size)
        assert len(idx.dataset_index) == size and idx.drawn.sum() == size
        assert np.all(idx.drawn <= caps)
        for source in range(len(weights)):
            positions = idx.dataset_sample_index[idx.dataset_index == source]
            np.testing.assert_array_equal(positions, np.arange(idx.drawn[source]))


def test_counts_follow_the_water_filled_allocation():
    weights = [0.5, 0.25, 0.25]
    caps = [100, 300, UNCAPPED]
    idx = build_capped_blend_index(weights, caps, 1000)
    expected = water_fill(weights, [100.0, 300.0, float("inf")], 1000.0)
    assert expected == [100.0, 300.0, 600.0]
    np.testing.assert_array_equal(idx.drawn, [100, 300, 600])


def test_uncapped_mix_is_proportional_and_interleaved():
    idx = build_capped_blend_index([0.6, 0.3, 0.1], [None] * 3, 10_000)
    np.testing.assert_array_equal(idx.drawn, [6000, 3000, 1000])
    # every prefix of the index stays within one sample of its target share
    counts = np.cumsum(np.eye(3, dtype=np.int64)[idx.dataset_index], axis=0)
    targets = np.arange(1, 10_001)[:, None] * np.array([0.6, 0.3, 0.1])
    assert np.abs(counts - targets).max() <= 1.0


def test_remaining_sources_keep_their_ratio_after_a_cap():
    idx = build_capped_blend_index([0.5, 0.3, 0.2], [50, UNCAPPED, UNCAPPED], 1050)
    assert idx.drawn.tolist() == [50, 600, 400]


def test_deterministic():
    a = build_capped_blend_index([0.3, 0.7], [400, 10_000], 5000)
    b = build_capped_blend_index([0.3, 0.7], [400, 10_000], 5000)
    np.testing.assert_array_equal(a.dataset_index, b.dataset_index)


@pytest.mark.parametrize("impl", [build_capped_blend_index, reference_capped_blend_index])
def test_errors_are_clear(impl):
    with pytest.raises(ValueError, match="supply only 6 samples .* 7 were requested"):
        impl([1.0, 1.0], [3, 3], 7)
    with pytest.raises(ValueError, match="source 1 has weight"):
        impl([1.0, 0.0], [3, 3], 2)
    with pytest.raises(ValueError, match="source 0 has a negative cap"):
        impl([1.0, 1.0], [-1, 3], 2)
    with pytest.raises(ValueError, match="2 weights but 1 caps"):
        impl([1.0, 1.0], [3], 2)
    with pytest.raises(ValueError, match="no sources"):
        impl([], [], 0)


def test_extension_validates_on_its_own():
    from megatron_lang import _C

    with pytest.raises(ValueError, match="caps supply only 6"):
        _C.build_capped_blend_index(np.ones(2), np.array([3, 3]), 7)
    with pytest.raises(ValueError, match="source 1 has weight"):
        _C.build_capped_blend_index(np.array([1.0, np.nan]), np.array([3, 3]), 2)
