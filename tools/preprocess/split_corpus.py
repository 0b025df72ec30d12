"""Split a JSONL corpus by document: every N-th document held out for evaluation.

Thin CLI over :func:`megatron_lang.data.splits.split_jsonl`.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  python tools/preprocess/split_corpus.py --input corpus/da.jsonl \\
      --train corpus/da_train.jsonl --heldout corpus/da_heldout.jsonl --every 10
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="split_corpus.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="JSONL corpus (one document per line)")
    p.add_argument("--train", required=True, help="JSONL to write the training documents to")
    p.add_argument("--heldout", required=True, help="JSONL to write the held-out documents to")
    p.add_argument("--every", type=int, default=10, help="hold out every N-th document (10)")
    p.add_argument("--json-key", default="text", help="key holding the text (default: text)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from megatron_lang.data.splits import SplitError, split_jsonl

    try:
        s = split_jsonl(args.input, args.train, args.heldout, args.every, args.json_key)
    except SplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.train}: {s.train_documents} documents ({s.train_characters} characters); "
        f"{args.heldout}: {s.heldout_documents} documents ({s.heldout_characters} characters)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
