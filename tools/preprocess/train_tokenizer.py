"""Train a byte-level BPE (HF tokenizers) or SentencePiece BPE tokenizer on a corpus.

Thin CLI over :func:`megatron_lang.adaptation.tokenizer_train.train_tokenizer`.
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  # byte-level BPE, 16k tokens, on Danish JSONL (text under "text")
  python tools/preprocess/train_tokenizer.py --input corpus/da.jsonl --output tok/da_bpe \\
      --type bpe --vocab-size 16000

  # SentencePiece BPE with byte fallback (writes tokenizer.model + tokenizer.json)
  python tools/preprocess/train_tokenizer.py --input corpus/da.jsonl --output tok/da_sp \\
      --type sentencepiece --vocab-size 8000 --special-tokens "<|im_start|>" "<|im_end|>"

the folder loads with transformers.AutoTokenizer.from_pretrained(OUTPUT);
special tokens (defaults <s> </s> <pad> <mask>; SentencePiece also <unk> at id 0) come first.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="train_tokenizer.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", nargs="+", required=True, help="JSONL / .txt files or folders")
    p.add_argument("--output", required=True, help="tokenizer folder to write")
    p.add_argument("--type", default="bpe", help="bpe (byte-level, default) or sentencepiece")
    p.add_argument("--vocab-size", type=int, default=16000, help="vocabulary size (default 16000)")
    p.add_argument("--json-key", default="text", help="JSON key holding the text (default: text)")
    p.add_argument("--bos-token", default="<s>", help="BOS token ('' for none)")
    p.add_argument("--eos-token", default="</s>", help="EOS/EOD token ('' for none)")
    p.add_argument("--pad-token", default="<pad>", help="padding token ('' for none)")
    p.add_argument("--mask-token", default="<mask>", help="mask token ('' for none)")
    p.add_argument("--unk-token", default="<unk>", help="SentencePiece unknown piece")
    p.add_argument("--special-tokens", nargs="*", default=[], help="more special tokens")
    p.add_argument("--max-docs", type=int, help="train on the first N documents")
    p.add_argument("--max-chars", type=int, help="stop reading after N characters")
    p.add_argument("--min-frequency", type=int, default=2, help="BPE: minimum pair count")
    p.add_argument(
        "--character-coverage", type=float, default=0.9999, help="SentencePiece coverage"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.adaptation.tokenizer_files import TokenizerError
    from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer

    config = TrainConfig(
        inputs=args.input,
        output_dir=args.output,
        kind=args.type,
        vocab_size=args.vocab_size,
        text_key=args.json_key,
        bos_token=args.bos_token or None,
        eos_token=args.eos_token or None,
        pad_token=args.pad_token or None,
        mask_token=args.mask_token or None,
        unk_token=args.unk_token,
        special_tokens=args.special_tokens,
        max_docs=args.max_docs,
        max_chars=args.max_chars,
        min_frequency=args.min_frequency,
        character_coverage=args.character_coverage,
        overwrite=args.overwrite,
    )
    try:
        report = train_tokenizer(config)
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = ("kind", "vocab_size", "documents", "characters", "special_tokens")
    print(json.dumps({k: report[k] for k in keys} | {"output": args.output}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
