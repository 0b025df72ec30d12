"""Perplexity per token and per word of HF / Megatron models on held-out text per language."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # an HF model and a trained run (its latest checkpoint) on Danish and English
  python tools/analysis/evaluate.py --models base=hf/SmolLM2-135M cpt=runs/da \\
      --data da=heldout/da.jsonl en=heldout/en.jsonl --output reports/ppl.json
  # a converted checkpoint on a tokenized dataset (made with the checkpoint's tokenizer)
  python tools/analysis/evaluate.py --models ckpt/smollm2 \\
      --data da=data/da_val_text_document --seq-length 2048 --stride 512
data: JSONL (the "text" key; .gz/.zst too), .txt files (one file = one document),
      folders of them, or Megatron .bin/.idx prefixes.
scoring: the tokenizer's BOS (else EOS) is put before each document and every text
      token is scored once; words = whitespace split of the text (docs/evaluation.md).
"""


def _pairs(values: list[str], what: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        label, sep, path = v.partition("=")
        if not sep:
            label, path = (v.rstrip("/").rsplit("/", 1)[-1], v) if what == "model" else ("", "")
        if not label or not path:
            flag = "--models" if what == "model" else "--data"
            parser.error(f"{flag} entry {v!r}: expected LABEL=PATH")
        if label in out:
            parser.error(f"{what} label {label!r} given twice")
        out[label] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="[LABEL=]PATH: HF dir, .gguf, checkpoint, run folder",
    )
    p.add_argument(
        "--data", nargs="+", required=True, help="LANG=PATH: JSONL/.txt/folder or .bin/.idx prefix"
    )
    p.add_argument(
        "--seq-length", type=int, default=1024, help="window length in tokens (default 1024)"
    )
    p.add_argument(
        "--stride", type=int, help="sliding windows this many tokens apart (default: no overlap)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--tokenizer", help="tokenizer directory replacing the models' own")
    p.add_argument("--prefix-token", help="token put before each document (default: BOS, else EOS)")
    p.add_argument(
        "--allow-noncanonical",
        action="store_true",
        help="accept .bin ids that are not the tokenizer's encoding of their text",
    )
    p.add_argument("--output", help="JSON report to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    p = build_parser()
    args = p.parse_args(argv)
    models = _pairs(args.models, "model", p)
    data = _pairs(args.data, "data", p)

    from megatron_lang.analysis.perplexity import EvaluationError, evaluate_models

    try:
        report = evaluate_models(
            models,
            data,
            seq_length=args.seq_length,
            batch_size=args.batch_size,
            stride=args.stride,
            tokenizer=args.tokenizer,
            prefix_token=args.prefix_token,
            allow_noncanonical=args.allow_noncanonical,
            progress=not args.no_progress,
        )
    except (EvaluationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.table())
    if args.output:
        print(f"wrote {report.write_json(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
