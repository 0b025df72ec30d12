"""Check a Megatron indexed dataset: header, pointers, sizes against the .bin, document indices."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  python tools/preprocess/validate_dataset.py data/da_text_document
  python tools/preprocess/validate_dataset.py data/*_document --vocab-size 49152
exit status: 0 when every dataset is valid, 1 at the first inconsistency (printed).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="validate_dataset.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prefix", nargs="+", help="dataset prefixes (a trailing .bin/.idx is dropped)")
    p.add_argument("--vocab-size", type=int, help="also check every token id is below this")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    from megatron_lang.data.indexed import validate_dataset

    for prefix in args.prefix:
        prefix = prefix.removesuffix(".bin").removesuffix(".idx")
        problems = validate_dataset(prefix, args.vocab_size)
        if problems:
            print(f"INVALID {prefix}: {problems[0]}", file=sys.stderr)
            return 1
        print(f"ok {prefix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
