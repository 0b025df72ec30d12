"""Concatenate Megatron indexed datasets (same dtype) into one."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  python tools/preprocess/merge_datasets.py --input data/da_part0_text_document \\
      data/da_part1_text_document --output-prefix data/da_text_document
  # documents keep their order: all of part0, then all of part1
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="merge_datasets.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", nargs="+", required=True, help="dataset prefixes (no .bin/.idx)")
    p.add_argument("--output-prefix", required=True, help="merged dataset prefix")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    from megatron_lang.data.indexed import merge_datasets, validate_dataset

    for prefix in args.input:
        problems = validate_dataset(prefix)
        if problems:
            print(f"error: {problems[0]}", file=sys.stderr)
            return 1
    try:
        index = merge_datasets(args.input, args.output_prefix)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{args.output_prefix}: {index.document_count - 1} documents, "
        f"{index.sequence_count} sequences, dtype {index.dtype}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
