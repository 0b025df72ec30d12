"""Measure tokenizer fertility (tokens per word, characters per token) per corpus.

Thin CLI over :func:`megatron_lang.adaptation.fertility.measure_fertility`.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # SmolLM2 vs a Danish tokenizer on Danish and English JSONL (text under "text")
  python tools/preprocess/fertility.py --input da=corpus/da.jsonl en=corpus/en.jsonl \\
      --tokenizer smollm2=path/to/smollm2_tokenizer_dir da-bpe=tok/da_bpe \\
      --json fertility.json --plot fertility.png

  # SentencePiece model files and a Mistral tekken JSON; first 200 documents per corpus
  python tools/preprocess/fertility.py --input corpus/da.jsonl --max-docs 200 \\
      --tokenizer mistral7b=/path/to/tokenizer.model.v1 nemo=/path/to/tekken_240718.json

words: "whitespace" = len(text.split()); "regex" = matches of \\w+(?:[-'’]\\w+)* (Python re)
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="fertility.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", nargs="+", required=True, help="[LABEL=]PATH of JSONL / .txt files or folders"
    )
    p.add_argument(
        "--tokenizer",
        nargs="+",
        required=True,
        help="[LABEL=]PATH: HF dir / tokenizer.json / SentencePiece model / tekken JSON",
    )
    p.add_argument("--json-key", default="text", help="JSON key holding the text (default: text)")
    p.add_argument("--max-docs", type=int, help="use only the first N documents of each input")
    p.add_argument("--max-chars", type=int, help="stop each input after N characters")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write a PNG bar chart here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.adaptation.fertility import (
        format_table,
        measure_fertility,
        plot_fertility,
        write_report_json,
    )
    from megatron_lang.adaptation.tokenizer_files import TokenizerError

    try:
        report = measure_fertility(
            args.input,
            args.tokenizer,
            text_key=args.json_key,
            max_docs=args.max_docs,
            max_chars=args.max_chars,
            progress=False if args.no_progress else None,
        )
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json:
        print(f"wrote {write_report_json(report, args.json)}")
    if args.plot:
        print(f"wrote {plot_fertility(report, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
