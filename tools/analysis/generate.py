"""Greedy continuations of prompts with an HF model directory (e.g. an export), via transformers."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  # the exported model of the demo, two Danish prompts
  python tools/analysis/generate.py --model runs/demo/smollm2-da-hf \\
      --prompt "Værktøjet bruges til" "Når du gemmer et billede" --max-new-tokens 30
  # and keep the result
  python tools/analysis/generate.py --model hf/my-export --prompt "Det er" --json gen.json
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="generate.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--prompt", nargs="+", required=True, help="one or more prompts")
    p.add_argument("--max-new-tokens", type=int, default=30, help="default 30")
    p.add_argument("--json", help="write the prompts and continuations here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from megatron_lang.analysis.generate import GenerationError, greedy_continuations

    try:
        outs = greedy_continuations(args.model, args.prompt, args.max_new_tokens)
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in outs:
        print(f"{c.prompt!r} -> {c.continuation!r}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"model": args.model, "generations": [c.to_dict() for c in outs]},
                f,
                ensure_ascii=False,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
