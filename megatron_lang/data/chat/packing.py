"""Whole conversations packed into fixed-length samples, never split (best-fit decreasing).

Best-fit decreasing places each conversation, longest first, into the open sample with the
least room that still holds it (a new sample when none does).  It packs at least as well as
first-fit decreasing (both are within 11/9 of the optimum plus one sample) and typically
fills ≥ 99 % of the slots when conversations are short next to the sample length.
"""

from __future__ import annotations

import bisect

import numpy as np


def pack_best_fit(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total length ``<= capacity``.

    Ties in length keep the input order; bins are returned in the order they were opened.

    Raises:
        ValueError: a length above ``capacity`` or below 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.max() > capacity or lengths.min() < 1):
        raise ValueError(
            f"lengths must lie in 1..{capacity} (got {int(lengths.min())}..{int(lengths.max())})"
        )
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    # Open bins sorted by their free room: parallel lists keyed by (room, bin id).
    rooms: list[int] = []
    ids: list[int] = []
    for i in order.tolist():
        need = int(lengths[i])
        k = bisect.bisect_left(rooms, need)
        if k == len(rooms):
            b = len(bins)
            bins.append([i])
            room = capacity - need
        else:
            b = ids.pop(k)
            room = rooms.pop(k) - need
            bins[b].append(i)
        if room > 0:
            k = bisect.bisect_left(rooms, room)
            rooms.insert(k, room)
            ids.insert(k, b)
    return bins


def packing_efficiency(lengths: np.ndarray, bins: int, capacity: int) -> float:
    """Filled token slots over all slots (``bins x capacity``)."""
    return float(np.asarray(lengths).sum() / (bins * capacity)) if bins else 0.0
