"""Build the demo corpus: GIMP-manual pages (Danish, Nynorsk ...) -> Megatron datasets + blend.

Thin CLI over :func:`megatron_lang.data.demo.build_demo_data`. The text comes from
Debian's ``gimp-help-<lang>`` packages on this machine; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  # Danish + Nynorsk with the tokenizer of a converted checkpoint
  python tools/preprocess/build_demo_data.py --out runs/demo/data \\
      --tokenizer runs/demo/smollm2-mcore/tokenizer

  # all pages of three languages, a 2000-token BPE trained on them
  python tools/preprocess/build_demo_data.py --out runs/demo/data --languages da nn en \\
      --docs-per-language 0 --vocab-size 2000
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="build_demo_data.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--languages", nargs="+", default=["da", "nn"], help="default: da nn")
    p.add_argument("--docs-per-language", type=int, default=60, help="0 = all pages")
    p.add_argument("--tokenizer", help="existing tokenizer (default: train a byte-level BPE)")
    p.add_argument("--vocab-size", type=int, default=512, help="size of a trained tokenizer")
    p.add_argument("--max-epochs", type=float, default=8, help="repetition cap per source")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build the data; print the blend and tokenizer paths as JSON."""
    p = build_parser()
    args = p.parse_args(argv)

    from megatron_lang.data.demo import build_demo_data

    try:
        out = build_demo_data(
            args.out,
            tuple(args.languages),
            args.docs_per_language or None,
            args.tokenizer,
            args.vocab_size,
            args.max_epochs,
        )
    except FileNotFoundError as e:
        print(f"error: {e}")
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
