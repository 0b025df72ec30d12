"""Time the capped blend index against megatron-core's uncapped one and the NumPy reference.

    python bench/blend_index.py        # 10 M samples over 8 sources (half of them capped)

Prints the best of ``--repeats`` wall times of ``build_capped_blend_index`` (C++,
``megatron_lang._C``), megatron-core's ``build_blending_indices`` (C++, no caps) on the
same weights and size, and ``reference_capped_blend_index`` (NumPy) on fewer samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000_000, help="index size")
    p.add_argument("--sources", type=int, default=8, help="number of sources")
    p.add_argument("--reference-samples", type=int, default=100_000, help="NumPy reference size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (best is printed)")
    args = p.parse_args(argv)

    from megatron.core.datasets import helpers_cpp

    from megatron_lang.data.blend_index import (
        build_capped_blend_index,
        reference_capped_blend_index,
    )

    n, size = args.sources, args.samples
    weights = np.arange(1, n + 1, dtype=np.float64)
    share = weights / weights.sum()
    # every other source is capped at half of what its weight would draw
    caps = [int(0.5 * s * size) if i % 2 else None for i, s in enumerate(share)]

    capped = best_of(args.repeats, lambda: build_capped_blend_index(weights, caps, size))
    index = build_capped_blend_index(weights, caps, size)
    capped_out = [int(c) for c in caps if c is not None]
    assert [int(d) for d in index.drawn[1::2]] == capped_out  # the caps bind

    def uncapped() -> None:
        dataset_index = np.zeros(size, dtype=np.int16)
        sample_index = np.zeros(size, dtype=np.int64)
        helpers_cpp.build_blending_indices(dataset_index, sample_index, share, n, size, False)

    mcore = best_of(args.repeats, uncapped)
    ref_n = args.reference_samples
    ref = best_of(1, lambda: reference_capped_blend_index(weights, caps, ref_n))
    print(f"{size:,} samples over {n} sources ({len(capped_out)} capped), best of {args.repeats}:")
    print("  capped index (megatron_lang._C):".ljust(51) + f"{capped:.2f} s")
    print("  megatron-core build_blending_indices (no caps):".ljust(51) + f"{mcore:.2f} s")
    print(f"  NumPy reference, {ref_n:,} samples:".ljust(51) + f"{ref:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
