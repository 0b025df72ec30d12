"""Export a LoRA training checkpoint: merged into an HF model, and/or as an HF PEFT adapter."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  # merged weights (W + alpha/r * B A) -> a plain HF model directory
  python tools/convert_hf/export_lora.py --ckpt ckpt/lora-pl/iter_0001000 --merged hf/mistral-pl

  # the adapters alone, in PEFT format (load on the HF base model with peft)
  python tools/convert_hf/export_lora.py --ckpt ckpt/lora-pl/iter_0001000 \\
      --peft hf/mistral-pl-lora --base-model mistralai/Mistral-7B-v0.1

  # both at once
  python tools/convert_hf/export_lora.py --ckpt ckpt/lora-pl/iter_0001000 \\
      --merged hf/mistral-pl --peft hf/mistral-pl-lora

  # load the adapter
  python -c "from transformers import AutoModelForCausalLM as M; from peft import PeftModel; \\
PeftModel.from_pretrained(M.from_pretrained('hf/mistral-7b'), 'hf/mistral-pl-lora')"
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export_lora",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="checkpoint of a run with lora.enabled=true")
    p.add_argument("--merged", metavar="OUT_HF", help="HF model directory with merged weights")
    p.add_argument("--peft", metavar="OUT_PEFT", help="PEFT adapter directory")
    p.add_argument("--base-model", help="base_model_name_or_path written to adapter_config.json")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="exported dtype")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.merged or args.peft):
        parser.error("give --merged OUT_HF and/or --peft OUT_PEFT")
    import torch

    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion import ConversionError, megatron_to_hf
    from megatron_lang.conversion.lora import LoraSpec, export_peft
    from megatron_lang.platform import setup_logging

    setup_logging()
    dtype = getattr(torch, args.dtype) if args.dtype else None
    try:
        if LoraSpec.from_metadata(load_metadata(args.ckpt)) is None:
            print(f"error: {args.ckpt} has no LoRA adapters", file=sys.stderr)
            return 2
        if args.merged:
            report = megatron_to_hf(args.ckpt, args.merged, dtype=dtype, overwrite=args.overwrite)
            print(f"wrote {report.out_dir} (merged): {report.tensors} tensors")
        if args.peft:
            out = export_peft(
                args.ckpt,
                args.peft,
                dtype=dtype,
                base_model=args.base_model,
                overwrite=args.overwrite,
            )
            print(f"wrote {out} (PEFT adapter)")
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
