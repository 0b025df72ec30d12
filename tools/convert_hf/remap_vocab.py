"""Remap a Megatron checkpoint's embedding and LM head to a new tokenizer (weights-only output).

Old tokens keep their rows bit for bit, new tokens get --embed-init rows, every
other tensor is copied unchanged; the vocabulary is re-padded for
--tp-for-padding. Works on converted and training checkpoints saved at any
TP/PP. Optimizer state is not carried over: start training from the result with
model.checkpoint=OUT (a fresh optimizer).
"""

from __future__ import annotations

import argparse
import sys

from megatron_lang.adaptation.init_options import add_embed_init_args, build_embed_init

EPILOG = """examples:
  # converted base model -> extended Danish tokenizer, mean of old sub-token rows
  python tools/convert_hf/remap_vocab.py --ckpt ckpt/l31-base --out ckpt/l31-da \\
      --new-tokenizer tok/l31-da

  # a training checkpoint (root with `latest`, or one iter_N folder), FOCUS init,
  # padding for TP=8, and refuse tokenizers that drop old tokens
  python tools/convert_hf/remap_vocab.py --ckpt runs/cpt/checkpoints --out ckpt/cpt-da \\
      --new-tokenizer tok/l31-da --embed-init focus --focus-corpus data/da.jsonl \\
      --tp-for-padding 8 --require-superset

  # then train from it (fresh optimizer): model.checkpoint=ckpt/cpt-da
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remap_vocab",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ckpt", required=True, help="megatron_lang checkpoint (iter_N or a root with latest)"
    )
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--new-tokenizer", required=True, help="folder of the new HF tokenizer")
    add_embed_init_args(p)
    p.add_argument(
        "--vocab-divisor",
        type=int,
        help="pad vocab to a multiple of this x TP (default: recorded or 128)",
    )
    p.add_argument(
        "--tp-for-padding", type=int, help="TP size the padding must suit (default: recorded or 1)"
    )
    p.add_argument(
        "--require-superset",
        action="store_true",
        help="fail when the new tokenizer lacks a token of the old one",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_lang.adaptation.remap_checkpoint import remap_checkpoint_vocab
    from megatron_lang.conversion import ConversionError
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        report = remap_checkpoint_vocab(
            args.ckpt,
            args.out,
            args.new_tokenizer,
            build_embed_init(args),
            output_shrink=args.output_shrink,
            vocab_divisor=args.vocab_divisor,
            tp_for_padding=args.tp_for_padding,
            require_superset=args.require_superset,
            overwrite=args.overwrite,
        )
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.out_dir}: vocab {report.old_vocab_size} -> {report.new_vocab_size} "
        f"({report.new_tokens} new, {report.dropped_tokens} dropped), padded "
        f"{report.padded_vocab_size}, {report.tensors} tensors, {report.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
