"""Convert an HF Llama-family model (directory or GGUF) to a megatron-core torch_dist checkpoint."""

from __future__ import annotations

import argparse
import sys

from megatron_lang.adaptation.init_options import add_embed_init_args, build_embed_init

EPILOG = """examples:
  # Llama-2/3, Mistral, Qwen2, SmolLM2 directory -> checkpoint loadable at any TP/PP
  python tools/convert_hf/hf_to_megatron.py --hf /models/Llama-3.1-8B --out ckpt/llama31-base

  # check the conversion: HF and Megatron logits on a fixed prompt
  python tools/convert_hf/hf_to_megatron.py --hf /models/Mistral-7B-v0.3 --out ckpt/m7 --verify

  # a GGUF file (de-quantised through transformers)
  python tools/convert_hf/hf_to_megatron.py --hf SmolLM2-135M-Instruct.Q4_1.gguf --out ckpt/smol

  # a new (extended) tokenizer: old tokens keep their rows, new ones get the mean
  # of their old sub-token rows
  python tools/convert_hf/hf_to_megatron.py --hf /models/Llama-2-7b --out ckpt/l2-da \\
      --new-tokenizer tok/llama2-da --embed-init mean

  # the same with FOCUS: new rows are sparse weighted means of overlapping tokens'
  # rows, weights from fastText trained on the target corpus (new tokenizer)
  python tools/convert_hf/hf_to_megatron.py --hf /models/Llama-2-7b --out ckpt/l2-da \\
      --new-tokenizer tok/llama2-da --embed-init focus --focus-corpus data/da.jsonl

  # an already converted or trained checkpoint: tools/convert_hf/remap_vocab.py
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hf_to_megatron",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--hf", required=True, help="HF model directory (safetensors/.bin) or .gguf file"
    )
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--new-tokenizer", help="folder of a new tokenizer to remap embeddings to")
    add_embed_init_args(p)
    p.add_argument(
        "--vocab-divisor", type=int, default=128, help="pad vocab to a multiple of this x TP"
    )
    p.add_argument("--tp-for-padding", type=int, default=1, help="TP size the padding must suit")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="stored dtype")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--verify", action="store_true", help="compare HF and Megatron logits afterwards"
    )
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit diff for --verify")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from megatron_lang.conversion import ConversionError, hf_to_megatron, verify_conversion
    from megatron_lang.conversion.verify import VerificationError
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        if args.embed_init != "mean" and not args.new_tokenizer:
            raise ValueError(f"--embed-init {args.embed_init} needs --new-tokenizer")
        embed_init = build_embed_init(args)
        report = hf_to_megatron(
            args.hf,
            args.out,
            new_tokenizer=args.new_tokenizer,
            embed_init=embed_init,
            output_shrink=args.output_shrink,
            vocab_divisor=args.vocab_divisor,
            tp_for_padding=args.tp_for_padding,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            overwrite=args.overwrite,
        )
    except (ConversionError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.out_dir}: {report.tensors} tensors, {report.bytes_written / 1e6:.1f} MB, "
        f"padded vocab {report.padded_vocab_size}, {report.seconds:.1f} s"
    )
    if args.verify:
        try:
            print("verify:", verify_conversion(args.hf, args.out, args.tolerance).summary())
        except VerificationError as e:
            print(f"verify: {e}", file=sys.stderr)
            return 1
        except ValueError as e:  # e.g. a checkpoint that records a vocabulary change
            print(f"verify: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
