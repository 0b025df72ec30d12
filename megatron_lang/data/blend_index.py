"""Capped blend index: which source each training sample comes from.

megatron-core's ``build_blending_indices`` interleaves sources greedily by the
largest deficit against their weights but has no notion of a per-source limit:
a small source with a large weight is simply repeated as often as needed.  The
capped index adds that limit.  Given weights ``w``, caps ``c`` (the most samples
drawable from each source, i.e. ``max_epochs * samples_per_epoch``) and a total
``size``:

* the *active* sources are those that have not reached their cap;
* with ``A`` the samples drawn so far from the active sources and
  ``w'_i = w_i / sum_active(w)``, sample ``t`` goes to the active source that
  maximises ``w'_i * (A + 1) - count_i`` (lowest source id on ties);
* a source whose count reaches its cap leaves the active set and the remaining
  weights are renormalised, so the active sources keep their mutual ratios.

The result: every source ends with ``min(cap_i, lambda * w_i)`` samples (up to
rounding) -- the same allocation as the water-filling in
:func:`megatron_lang.data.blend.water_fill` -- and ``dataset_sample_index``
counts ``0, 1, 2, ...`` within each source, so no position is drawn twice.

:func:`build_capped_blend_index` runs the C++ loop in ``megatron_lang._C``
(GIL released).  :func:`reference_capped_blend_index` is the pure-NumPy
reference of the same algorithm, with the floating-point operations in the same
order, so the two agree bit for bit; the parity test holds them to that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

UNCAPPED = np.iinfo(np.int64).max
"""Cap value meaning "no limit"."""

_MAX_SOURCES = np.iinfo(np.int16).max


class BlendIndex(NamedTuple):
    """The two arrays megatron-core's ``BlendedDataset`` reads, plus per-source totals."""

    dataset_index: np.ndarray
    """int16[size]: source id of each sample."""
    dataset_sample_index: np.ndarray
    """int64[size]: position of each sample inside its source."""
    drawn: np.ndarray
    """int64[n_sources]: samples drawn from each source."""


def _as_inputs(
    weights: Sequence[float] | np.ndarray, caps: Sequence[int | None] | np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    w = np.asarray(weights, dtype=np.float64)
    c = np.array([UNCAPPED if x is None else int(x) for x in caps], dtype=np.int64)
    return w, c, int(size)


def check_inputs(weights: np.ndarray, caps: np.ndarray, size: int) -> None:
    """Raise ``ValueError`` naming the offending source when the inputs are invalid.

    Args:
        weights: float64[n], finite and > 0.
        caps: int64[n], >= 0.
        size: samples requested, >= 0 and <= sum(caps).
    """
    n = len(weights)
    if n == 0:
        raise ValueError("capped blend index: no sources given")
    if n > _MAX_SOURCES:
        raise ValueError(f"capped blend index: {n} sources exceed the int16 limit")
    if len(caps) != n:
        raise ValueError(f"capped blend index: {n} weights but {len(caps)} caps")
    if weights.ndim != 1 or caps.ndim != 1:
        raise ValueError("capped blend index: weights and caps must be 1-D")
    if size < 0:
        raise ValueError("capped blend index: size must be >= 0")
    for i in range(n):
        if not np.isfinite(weights[i]) or weights[i] <= 0:
            raise ValueError(
                f"capped blend index: source {i} has weight {weights[i]}; "
                "weights must be finite and > 0"
            )
        if caps[i] < 0:
            raise ValueError(f"capped blend index: source {i} has a negative cap {caps[i]}")
    supply = min(sum(int(x) for x in caps), int(UNCAPPED))
    if supply < size:
        raise ValueError(
            f"capped blend index: the caps supply only {supply} samples in total "
            f"but {size} were requested"
        )


def build_capped_blend_index(
    weights: Sequence[float] | np.ndarray,
    caps: Sequence[int | None] | np.ndarray,
    size: int,
) -> BlendIndex:
    """Build the capped blend index with the C++ extension.

    Args:
        weights: relative weight per source (> 0; need not sum to 1).
        caps: the most samples drawable from each source; ``None`` or
            :data:`UNCAPPED` means unlimited.
        size: total number of samples.

    Returns:
        The :class:`BlendIndex`.

    Raises:
        ValueError: invalid inputs, or caps that cannot supply ``size`` samples.
        ImportError: the extension is not built (``pip install -e .`` or
            ``python setup.py build_ext --inplace``).
    """
    from megatron_lang import _C

    w, c, n = _as_inputs(weights, caps, size)
    check_inputs(w, c, n)
    return BlendIndex(*_C.build_capped_blend_index(w, c, n))


def reference_capped_blend_index(
    weights: Sequence[float] | np.ndarray,
    caps: Sequence[int | None] | np.ndarray,
    size: int,
) -> BlendIndex:
    """Pure-NumPy reference of :func:`build_capped_blend_index` (slow; for tests and docs).

    Same arguments, result and errors as :func:`build_capped_blend_index`.
    """
    w, c, n = _as_inputs(weights, caps, size)
    check_inputs(w, c, n)
    counts = np.zeros(len(w), dtype=np.int64)
    active = c > 0
    normalised = np.zeros(len(w), dtype=np.float64)

    def renormalise() -> None:
        total = 0.0
        for i in np.flatnonzero(active):  # sequential sum, same order as the C++ loop
            total += float(w[i])
        normalised[active] = w[active] / total

    renormalise()
    dataset_index = np.zeros(n, dtype=np.int16)
    dataset_sample_index = np.zeros(n, dtype=np.int64)
    drawn_active = 0
    for t in range(n):
        deficit = normalised * float(drawn_active + 1) - counts.astype(np.float64)
        deficit[~active] = -np.inf
        best = int(np.argmax(deficit))  # first maximum: lowest id on ties
        dataset_index[t] = best
        dataset_sample_index[t] = counts[best]
        counts[best] += 1
        drawn_active += 1
        if counts[best] >= c[best]:
            drawn_active -= int(counts[best])
            active[best] = False
            if active.any():
                renormalise()
    return BlendIndex(dataset_index, dataset_sample_index, counts)
