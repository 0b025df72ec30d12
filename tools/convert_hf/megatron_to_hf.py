"""Export a megatron_lang checkpoint to an HF directory (safetensors, config, tokenizer)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  # checkpoint written by hf_to_megatron or by training -> HF directory
  python tools/convert_hf/megatron_to_hf.py --ckpt ckpt/llama31-da --out hf/llama31-da

  # and check the export: Megatron and exported-HF logits on a fixed prompt
  python tools/convert_hf/megatron_to_hf.py --ckpt ckpt/smol --out hf/smol --verify

  # load the result
  python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('hf/smol')"
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron_to_hf",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="megatron_lang checkpoint directory")
    p.add_argument("--out", required=True, help="HF directory to create")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="exported dtype")
    p.add_argument("--max-shard-gb", type=float, default=2.0, help="safetensors shard size (GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--verify", action="store_true", help="compare Megatron and HF logits afterwards"
    )
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit diff for --verify")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from megatron_lang.conversion import ConversionError, megatron_to_hf, verify_conversion
    from megatron_lang.conversion.verify import VerificationError
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        report = megatron_to_hf(
            args.ckpt,
            args.out,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            max_shard_bytes=int(args.max_shard_gb * 1024**3),
            overwrite=args.overwrite,
        )
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.out_dir}: {report.tensors} tensors, {report.bytes_written / 1e6:.1f} MB, {report.seconds:.1f} s"
    )
    if args.verify:
        try:
            print(
                "verify:",
                verify_conversion(args.out, args.ckpt, args.tolerance, exported=True).summary(),
            )
        except VerificationError as e:
            print(f"verify: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
