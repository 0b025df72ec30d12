"""Show a Megatron indexed dataset: counts, dtype, document-length histogram, decoded documents."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  python tools/preprocess/inspect_dataset.py data/da_text_document
  python tools/preprocess/inspect_dataset.py data/da_text_document --tokenizer tok/ --decode 0 5
  python tools/preprocess/inspect_dataset.py data/da_text_document --json
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="inspect_dataset.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prefix", help="dataset prefix (a trailing .bin/.idx is dropped)")
    p.add_argument("--tokenizer", help="tokenizer to decode documents with")
    p.add_argument("--decode", type=int, nargs="*", default=[], help="document numbers to show")
    p.add_argument("--bins", type=int, default=10, help="histogram bins (log-spaced)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    from megatron_lang.data.indexed import IndexedDatasetReader, dataset_stats, validate_dataset

    prefix = args.prefix.removesuffix(".bin").removesuffix(".idx")
    problems = validate_dataset(prefix)
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 1
    stats = dataset_stats(prefix, args.bins)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"dataset   {prefix}")
        print(f"dtype     {stats['dtype']}")
        for key in ("documents", "sequences", "tokens", "bin_bytes"):
            print(f"{key:<9} {stats[key]}")
        d = stats["document_tokens"]
        print(f"tokens/document: min {d['min']}  mean {d['mean']:.1f}  max {d['max']}")
        print("histogram (tokens per document):")
        peak = max([b["documents"] for b in stats["histogram"]] + [1])
        for b in stats["histogram"]:
            bar = "#" * round(40 * b["documents"] / peak)
            print(f"  {b['min']:>9}-{b['max']:<9} {b['documents']:>9}  {bar}")
    if args.decode:
        reader = IndexedDatasetReader(prefix)
        tok = None
        if args.tokenizer:
            from megatron_lang.data.tokenizer import load_tokenizer

            backend = "sentencepiece" if args.tokenizer.endswith(".model") else "hf"
            tok = load_tokenizer(args.tokenizer, backend)[0]
        for n in args.decode:
            if not 0 <= n < reader.num_documents:
                print(
                    f"error: document {n} out of range [0, {reader.num_documents})", file=sys.stderr
                )
                return 1
            ids = reader.document(n)
            print(f"--- document {n}: {len(ids)} tokens")
            print(tok.decode(ids) if tok else " ".join(map(str, ids.tolist())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
