"""Build a JSONL corpus (one document per page) from HTML manuals, e.g. Debian's GIMP manual."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  # needs: apt-get install gimp-help-da gimp-help-nn gimp-help-en
  python tools/preprocess/build_html_corpus.py --output corpus/gimp.jsonl --languages da nn en
  python tools/preprocess/build_html_corpus.py --root /usr/share/gimp/2.0/help \\
      --languages da --max-docs 100 --output corpus/da_small.jsonl
records: {"text": ..., "lang": "da", "source": "da/filters.html", "title": ...}
"""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus

    p = argparse.ArgumentParser(
        prog="build_html_corpus.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--languages", nargs="+", default=["da", "nn", "en"], help="language folders")
    p.add_argument(
        "--root", default=str(GIMP_HELP_ROOT), help="folder with one folder per language"
    )
    p.add_argument("--max-docs", type=int, help="at most this many documents per language")
    args = p.parse_args(argv)
    try:
        stats = build_html_corpus(args.output, args.languages, args.root, args.max_docs)
    except FileNotFoundError as err:
        print(f"error: {err}")
        return 1
    print(f"{args.output}: {stats.documents} documents, {stats.characters} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
