"""Vocabulary-size sweep: fertility of the extended base tokenizer against tokens added.

Thin CLI over :func:`megatron_lang.adaptation.vocab_sweep.run_sweep`: trains one
byte-level BPE on the corpus at the largest size (smaller sizes are its prefixes by
merge rank), extends the base tokenizer with each size and measures tokens per word
on the held-out texts.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # SmolLM2 + Danish BPEs of 1k..8k; held-out Danish (the target, first) and English
  python tools/preprocess/vocab_sweep.py --corpus corpus/da_train.jsonl \\
      --heldout da=corpus/da_heldout.jsonl en=corpus/en.jsonl \\
      --base-tokenizer smollm2_tokenizer --sizes 1000 2000 4000 8000 --out-dir sweep

  # keep the extended tokenizers (sweep/tokenizers/extended_<size>/), replace old output
  python tools/preprocess/vocab_sweep.py --corpus corpus/da_train.jsonl \\
      --heldout da=corpus/da_heldout.jsonl --base-tokenizer smollm2_tokenizer \\
      --sizes 2000 16000 --out-dir sweep --keep-tokenizers --overwrite

writes OUT_DIR/sweep.md (table), sweep.json and sweep.png (tokens/word vs tokens added);
tokens/word counts regex words \\w+(?:[-'’]\\w+)* as fertility.py does.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="vocab_sweep.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--corpus", nargs="+", required=True, help="training JSONL / .txt files or folders"
    )
    p.add_argument(
        "--heldout",
        nargs="+",
        required=True,
        help="[LABEL=]PATH of held-out texts; the first is the target language",
    )
    p.add_argument(
        "--base-tokenizer", required=True, help="base HF byte-level BPE folder / tokenizer.json"
    )
    p.add_argument(
        "--sizes", nargs="+", type=int, required=True, help="new tokenizer vocabulary sizes"
    )
    p.add_argument("--out-dir", required=True, help="folder for sweep.md, sweep.json, sweep.png")
    p.add_argument("--json-key", default="text", help="JSON key holding the text (default: text)")
    p.add_argument("--max-docs", type=int, help="train on the first N documents of the corpus")
    p.add_argument("--max-chars", type=int, help="stop reading the corpus after N characters")
    p.add_argument("--heldout-max-docs", type=int, help="measure the first N held-out documents")
    p.add_argument("--min-frequency", type=int, default=2, help="BPE: minimum pair count")
    p.add_argument("--special-tokens", nargs="*", default=[], help="special tokens to append")
    p.add_argument("--mask-token", help="mask token to append (as extend_vocab.py)")
    p.add_argument(
        "--keep-tokenizers",
        action="store_true",
        help="also write the tokenizers (OUT_DIR/tokenizers)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.adaptation.tokenizer_files import TokenizerError
    from megatron_lang.adaptation.vocab_sweep import SweepConfig, format_markdown, run_sweep

    config = SweepConfig(
        corpus=args.corpus,
        heldout=args.heldout,
        base_tokenizer=args.base_tokenizer,
        sizes=args.sizes,
        out_dir=args.out_dir,
        text_key=args.json_key,
        max_docs=args.max_docs,
        max_chars=args.max_chars,
        heldout_max_docs=args.heldout_max_docs,
        min_frequency=args.min_frequency,
        mask_token=args.mask_token,
        special_tokens=args.special_tokens,
        keep_tokenizers=args.keep_tokenizers,
        overwrite=args.overwrite,
    )
    try:
        result = run_sweep(config, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_markdown(result))
    print(f"{len(result.rows) - 1} sizes in {result.seconds:.1f} s; wrote {args.out_dir}/sweep.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
