"""Weight divergence of checkpoints against a base model: which weights changed, and how much."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  # one trained checkpoint against the HF base model it started from
  python tools/analysis/divergence.py hf/Llama-3.1-8B runs/l31-da/iter_0010000 --out reports/div

  # a series: each checkpoint against the base; the curve's x axis is the step
  python tools/analysis/divergence.py ckpt/l31 runs/l31-da/iter_0002000 \\
      runs/l31-da/iter_0004000 runs/l31-da --out reports/div-series

  # just the table, no files; 30 top tokens by embedding change
  python tools/analysis/divergence.py hf/smol hf/smol-da --top-k 30

exit status: 0 done, 2 bad input (missing checkpoint, different architectures,
missing tensor or shape mismatch; nothing is written).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="divergence",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="base checkpoint, then one or more to compare with it: HF directories, "
        "megatron_lang checkpoints (iter_N or converter output) or run folders with 'latest'",
    )
    p.add_argument(
        "--out", help="folder for divergence.json and the PNG plots (default: table only)"
    )
    p.add_argument("--labels", nargs="+", help="names for the checkpoints (one per CKPT)")
    p.add_argument("--top-k", type=int, default=20, help="tokens listed by L1 change")
    p.add_argument("--no-plots", action="store_true", help="write only divergence.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_lang.analysis.divergence import compute_divergence, format_table, write_outputs
    from megatron_lang.analysis.weights import DivergenceError
    from megatron_lang.platform import setup_logging

    setup_logging("WARNING")
    if len(args.checkpoints) < 2:
        print("error: give a base checkpoint and at least one to compare", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2
    try:
        report = compute_divergence(
            args.checkpoints,
            labels=args.labels,
            top_k=args.top_k,
            progress=not args.no_progress,
        )
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(report, top_k=min(args.top_k, 10)))
    if args.out:
        written = write_outputs(report, args.out, plots=not args.no_plots)
        print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
