"""Report the effective blend of a YAML blend spec for a given number of training tokens.

Thin CLI over :mod:`megatron_lang.data.blend`; see ``docs/blends.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  # table of tokens available/drawn, epochs and share per source for a 250B-token run
  python tools/preprocess/blend_report.py --blend examples/blends/danish_cpt.yaml \\
      --total-tokens 250e9

  # also write the report as JSON and show sample-level caps for 4096-token sequences
  python tools/preprocess/blend_report.py --blend blend.yaml --total-tokens 2.5e11 \\
      --seq-length 4096 --json blend_report.json

exit status: 0 on success, 2 when the spec is invalid or its caps cannot supply the tokens.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="blend_report",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--blend", required=True, type=Path, help="YAML blend spec")
    parser.add_argument(
        "--total-tokens", required=True, type=float, help="training tokens of the run (250e9)"
    )
    parser.add_argument(
        "--seq-length",
        type=int,
        default=None,
        help="also plan in samples of this length (caps, samples drawn per source)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.data.blend import BlendError, BlendSpec

    try:
        spec = BlendSpec.from_yaml(args.blend)
        report = spec.compute_effective_weights(args.total_tokens)
        data = report.to_dict()
        text = report.to_table()
        if args.seq_length:
            from megatron_lang.data.blend_index import UNCAPPED
            from megatron_lang.data.gpt_dataset import plan_train_blend

            samples = int(args.total_tokens // args.seq_length)
            plan = plan_train_blend(spec, args.seq_length, samples)
            lines = [f"\n\nsamples of {args.seq_length} tokens: {samples} in total"]
            for src, row, cap, drawn in zip(
                spec.sources, data["sources"], plan.caps, plan.index.drawn
            ):
                row["samples_cap"] = None if cap == UNCAPPED else int(cap)
                row["samples_drawn"] = int(drawn)
                lines.append(
                    f"  {src.name}: {int(drawn)} drawn, cap {'-' if cap == UNCAPPED else cap}"
                )
            data["seq_length"] = args.seq_length
            text += "\n".join(lines)
    except BlendError as err:
        sys.stderr.write(f"blend_report: error: {err}\n")
        return 2
    sys.stdout.write(text + "\n")
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
