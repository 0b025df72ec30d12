"""Build a JSONL corpus (one document per page) from HTML manuals, e.g. Debian's GIMP manual."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  # needs: apt-get install gimp-help-da gimp-help-nn gimp-help-en
  python tools/preprocess/build_html_corpus.py --output corpus/gimp.jsonl --languages da nn en
  python tools/preprocess/build_html_corpus.py --root /usr/share/gimp/2.0/help \\
      --languages da --max-docs 100 --output corpus/da_small.jsonl
  # only the Danish paragraphs (most pages are untranslated English), every 10th page held out
  python tools/preprocess/build_html_corpus.py --languages da --keep-language \
      --output corpus/da_train.jsonl --heldout corpus/da_heldout.jsonl --heldout-every 10
records: {"text": ..., "lang": "da", "source": "da/filters.html", "title": ...}
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from megatron_lang.data.html_corpus import GIMP_HELP_ROOT

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
    p.add_argument(
        "--keep-language",
        action="store_true",
        help="keep only paragraphs in each folder's language (drops untranslated English)",
    )
    p.add_argument("--heldout", help="also write every N-th page here (a page-level split)")
    p.add_argument("--heldout-every", type=int, default=10, help="N for --heldout (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    from megatron_lang.data.html_corpus import build_html_corpus

    args = build_parser().parse_args(argv)
    try:
        stats = build_html_corpus(
            args.output,
            args.languages,
            args.root,
            args.max_docs,
            keep_language=args.keep_language,
            heldout=args.heldout,
            heldout_every=args.heldout_every,
        )
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}")
        return 1
    print(f"{args.output}: {stats.documents} documents, {stats.characters} characters")
    if args.heldout:
        print(
            f"  of which {stats.heldout_documents} documents, {stats.heldout_characters} "
            f"characters in {args.heldout}"
        )
    if args.keep_language:
        print(
            f"  language filter dropped {stats.filtered_paragraphs} paragraphs "
            f"({stats.filtered_characters} characters) and {stats.skipped_empty} pages"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
