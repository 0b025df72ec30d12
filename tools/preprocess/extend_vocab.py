"""Extend a base tokenizer with the new tokens of a target-language tokenizer: V ⊕ (V′ − V).

Thin CLI over :func:`megatron_lang.adaptation.vocab_extend.extend_tokenizer`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

EPILOG = """\
examples:
  # SmolLM2 (byte-level BPE) + a Danish BPE trained with train_tokenizer.py
  python tools/preprocess/extend_vocab.py --base path/to/smollm2_tokenizer_dir \\
      --new tok/da_bpe --output tok/smollm2_da --mask-token "<mask>"

  # Mistral-7B SentencePiece + a Danish SentencePiece BPE, at most 2000 new tokens
  python tools/preprocess/extend_vocab.py --base path/to/tokenizer.model \\
      --new tok/da_sp --output tok/mistral_da --max-new-tokens 2000

every base token keeps its id; new tokens get ids from the base size on.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="extend_vocab.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base", required=True, help="base HF dir / tokenizer.json / SentencePiece .model"
    )
    p.add_argument("--new", required=True, help="target-language tokenizer of the same kind")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument(
        "--max-new-tokens", type=int, help="add at most N tokens (new tokenizer's order)"
    )
    p.add_argument("--special-tokens", nargs="*", default=[], help="special tokens to append")
    p.add_argument("--mask-token", help="mask token to append and set in tokenizer_config.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.adaptation.tokenizer_files import TokenizerError
    from megatron_lang.adaptation.vocab_extend import extend_tokenizer

    try:
        report = extend_tokenizer(
            args.base,
            args.new,
            args.output,
            max_new_tokens=args.max_new_tokens,
            add_special_tokens=args.special_tokens,
            mask_token=args.mask_token,
            overwrite=args.overwrite,
        )
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    r = asdict(report)
    print(
        f"base size {r['base_size']}, new tokens added {r['added']}, final size {r['final_size']}"
    )
    print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
