"""Chat data (JSONL conversations) → packed, answer-masked Megatron datasets for instruction tuning.

Thin CLI over :func:`megatron_lang.data.chat.preprocess.build_chat_dataset`.
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
formats (auto-detected per line; --format forces one):
  {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
  {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}],
   "system": "..."}
  {"instruction": "...", "input": "...", "output": "..."}
  {"prompt": "...", "completion": "..."}

examples:
  # SmolLM2 with its own (ChatML) template, answer-only loss, 2 workers
  python tools/preprocess/preprocess_chat.py --input sft/train.jsonl --output data/sft_train \\
      --tokenizer path/to/hf_dir --seq-length 2048 --workers 2
  # -> data/sft_train/{chat,chat_lossmask}.{bin,idx} and data/sft_train/report.json

  # a base model without a template: Llama-2 [INST] format, SnakModel's full loss
  python tools/preprocess/preprocess_chat.py --input sft/ --output data/snak_full \\
      --tokenizer path/to/llama2_dir --template llama2 --loss-mode full --seq-length 4096

  # skip (and count) bad records instead of stopping at the first
  python tools/preprocess/preprocess_chat.py --input raw.jsonl.zst --output data/x \\
      --tokenizer tok/ --on-error skip
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    from megatron_lang.data.chat.formats import FORMATS
    from megatron_lang.data.chat.render import LOSS_MODES
    from megatron_lang.data.chat.templates import NAMED_TEMPLATES
    from megatron_lang.data.chat.tokens import BACKENDS

    p = argparse.ArgumentParser(
        prog="preprocess_chat.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", nargs="+", required=True, help="JSONL files (.gz/.zst) or folders")
    p.add_argument("--output", required=True, help="output folder (appears when complete)")
    p.add_argument("--tokenizer", required=True, help="local HF tokenizer folder")
    p.add_argument(
        "--seq-length", type=int, default=4096, help="tokens per packed sample (default 4096)"
    )
    p.add_argument(
        "--template",
        default="auto",
        help=f"auto (the tokenizer's own), {', '.join(NAMED_TEMPLATES)}, or a .jinja file",
    )
    p.add_argument(
        "--loss-mode",
        choices=LOSS_MODES,
        default="assistant",
        help="assistant: every answer + its end-of-turn token (default); last_turn: the last "
        "answer only; full: every token (SnakModel's setting)",
    )
    p.add_argument("--format", choices=FORMATS, default="auto", help="record format")
    p.add_argument(
        "--overlong",
        choices=["drop", "truncate"],
        default="drop",
        help="conversations longer than --seq-length: drop them (default) or keep their first "
        "SEQ_LENGTH tokens when that still holds a trained token; counted either way",
    )
    p.add_argument(
        "--on-error", choices=["fail", "skip"], default="fail", help="bad records (default fail)"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (0 = one per core)")
    p.add_argument(
        "--exact-render",
        action="store_true",
        help="render every conversation with Jinja (for templates that depend on the content)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="token ids and offsets: auto (gigatoken when it matches HF on a verification "
        "sample, else HF; default), hf (the tokenizers library, the reference), gigatoken "
        "(forced; still verified)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 bad input or template)."""
    args = build_parser().parse_args(argv)
    from megatron_lang.data.chat.preprocess import ChatDataConfig, build_chat_dataset
    from megatron_lang.data.chat.render import TemplateError
    from megatron_lang.data.preprocess import PreprocessError, default_workers
    from megatron_lang.data.readers import InputError
    from megatron_lang.platform.logging import setup_logging

    setup_logging()
    config = ChatDataConfig(
        inputs=args.input,
        output=args.output,
        tokenizer=args.tokenizer,
        seq_length=args.seq_length,
        template=args.template,
        loss_mode=args.loss_mode,
        format=args.format,
        overlong=args.overlong,
        on_error=args.on_error,
        workers=args.workers or default_workers(),
        exact_render=args.exact_render,
        backend=args.backend,
        overwrite=args.overwrite,
    )
    try:
        report = build_chat_dataset(config, progress=False if args.no_progress else None)
    except (PreprocessError, TemplateError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = ("conversations", "tokens", "packing", "speed", "backend")
    print(json.dumps({k: report[k] for k in keys} | {"report": f"{args.output}/report.json"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
