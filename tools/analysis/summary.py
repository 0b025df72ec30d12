"""Summarise a language-adaptation run: fertility, loss per word before/after, samples, plots.

Thin CLI over :mod:`megatron_lang.analysis.summary`. Every input is optional; what is
given is shown. With ``--language/--before/--after`` it also says whether the loss per
word on that language is lower after training, and ``--require-improvement`` makes
the exit status 3 when it is not.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # the demo's reports (examples/demo.sh runs this as its last step)
  python tools/analysis/summary.py --fertility runs/demo/reports/fertility.json \\
      --evaluation runs/demo/reports/evaluation.json --metrics runs/demo/metrics.jsonl \\
      --generation runs/demo/reports/generation.json --timings runs/demo/timings.tsv \\
      --language da --before smollm2 --after cpt --out-dir runs/demo
outputs: OUT_DIR/summary.md, OUT_DIR/summary.json, OUT_DIR/plots/*.png
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="summary.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fertility", help="JSON of tools/preprocess/fertility.py --json")
    p.add_argument("--evaluation", help="JSON of tools/analysis/evaluate.py --output")
    p.add_argument("--metrics", help="the trainer's metrics JSONL (logging.metrics_file)")
    p.add_argument("--generation", help="JSON of tools/analysis/generate.py --json")
    p.add_argument("--timings", help="'step<TAB>seconds' lines")
    p.add_argument("--language", help="language of the before/after verdict, e.g. da")
    p.add_argument("--before", help="evaluation label of the model before training")
    p.add_argument("--after", help="evaluation label of the model after training")
    p.add_argument(
        "--require-improvement",
        action="store_true",
        help="exit 3 when the loss per word on --language is not lower after",
    )
    p.add_argument("--out-dir", required=True, help="where summary.md/.json and plots/ go")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 3 no improvement)."""
    p = build_parser()
    args = p.parse_args(argv)
    if bool(args.language) + bool(args.before) + bool(args.after) not in (0, 3):
        p.error("--language, --before and --after go together")
    if args.require_improvement and not args.language:
        p.error("--require-improvement needs --language, --before and --after")
    from pathlib import Path

    from megatron_lang.analysis.summary import (
        SummaryError,
        build_summary,
        format_summary,
        write_summary,
    )

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        s = build_summary(
            fertility=args.fertility,
            evaluation=args.evaluation,
            metrics=args.metrics,
            generation=args.generation,
            timings=args.timings,
            language=args.language,
            before=args.before,
            after=args.after,
            plots_dir=out / "plots",
        )
    except SummaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_summary(s, out / "summary.md", out / "summary.json")
    print(format_summary(s))
    print(f"wrote {out / 'summary.md'}, {out / 'summary.json'}")
    if args.require_improvement and not s.verdict["improved"]:
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
