"""Cost of the hybrid objective's per-sample work (``megatron_lang.data.objectives``).

    python bench/mntp_masking.py      # S = 2048, 200 samples

Prints the mean time per sample of the span masking alone (``mask_tokens``) and of the
whole ``apply_objective`` for MNTP and for causal samples, with the dense ``[1, S, S]``
attention mask (``model.attention=dense``) and packed (per-document segments, the
default), on random token ids with an EOD about every 500 tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_sample_ms(samples: int, fn) -> float:
    fn(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(samples):
        fn(i)
    return (time.perf_counter() - t0) / samples * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--vocab-size", type=int, default=49152)
    args = p.parse_args(argv)

    from megatron_lang.data.objectives import MaskingSpec, apply_objective, mask_tokens, sample_rng

    s, eod = args.seq_length, 0
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, args.vocab_size, size=(args.samples + 1, s + 1))
    tokens[rng.random(tokens.shape) < 1 / 500] = eod
    items = [
        {"tokens": torch.from_numpy(t[:-1]), "labels": torch.from_numpy(t[1:])} for t in tokens
    ]

    def spec(fraction: float, packed: bool = False) -> MaskingSpec:
        return MaskingSpec(
            mask_id=1, vocab_size=args.vocab_size, special_ids=frozenset({eod}), eod_id=eod,
            fraction=fraction, packed=packed,
        )  # fmt: skip

    mntp, causal = spec(1.0), spec(0.0)
    packed_mntp, packed_causal = spec(1.0, True), spec(0.0, True)
    masking = per_sample_ms(
        args.samples, lambda i: mask_tokens(tokens[i, :-1], mntp, sample_rng(0, i))
    )
    whole_mntp = per_sample_ms(args.samples, lambda i: apply_objective(items[i], i, mntp))
    whole_causal = per_sample_ms(args.samples, lambda i: apply_objective(items[i], i, causal))
    pk_mntp = per_sample_ms(args.samples, lambda i: apply_objective(items[i], i, packed_mntp))
    pk_causal = per_sample_ms(args.samples, lambda i: apply_objective(items[i], i, packed_causal))
    print(f"S={s}, mean of {args.samples} samples:")
    print(f"  span masking (mask_tokens):              {masking:.2f} ms")
    print(f"  apply_objective, MNTP sample:            {whole_mntp:.2f} ms")
    print(f"  apply_objective, causal sample:          {whole_causal:.2f} ms")
    print(f"  packed (segments, no [1, S, S] mask), MNTP sample:   {pk_mntp:.2f} ms")
    print(f"  packed (segments, no [1, S, S] mask), causal sample: {pk_causal:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
