"""Words per second of prompt processing and greedy generation, before/after a tokenizer change.

Every model reads the same texts; the first model is the baseline. Prints a Markdown
table (tokens/word, tokens/s and words/s of prompt processing and generation), the
speed-up predicted from tokens per word against the measured one, and NorMistral's
claim as the reference. The arithmetic is in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """\
examples:
  # SmolLM2 against its CPT export with the extended Danish vocabulary, held-out Danish
  python tools/analysis/speed.py --models before=hf/smollm2 after=hf/smollm2-da \\
      --text heldout/da.jsonl --threads 2 --output reports/speed.json
  # shorter: 32 new tokens, 2 prompts, 1,000 words of prompt text in 128-token chunks
  python tools/analysis/speed.py --models before=hf/a after=hf/b --text da.txt \\
      --new-tokens 32 --prompts 2 --max-words 1000 --prompt-tokens 128 --repeats 5
text: JSONL ("text" key; .gz/.zst too), .txt files (one file = one document) or a folder.
words: len(text.split()); tokens without special tokens. Generation words/s is given
      twice: decoded words of the continuations / s, and tokens/s / tokens per word.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="speed.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="LABEL=DIR HF model directories; first = baseline",
    )
    p.add_argument("--text", required=True, help="texts: JSONL, .txt or a folder")
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=256,
        help="tokens per forward pass of prompt processing (default 256)",
    )
    p.add_argument("--prompts", type=int, default=4, help="generation prompts (default 4)")
    p.add_argument(
        "--prompt-words", type=int, default=24, help="words per generation prompt (default 24)"
    )
    p.add_argument(
        "--max-words", type=int, help="whole documents until this many words (default all)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs, median (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="default float32",
    )
    p.add_argument("--output", help="JSON report to write")
    return p


def _models(values: list[str], p: argparse.ArgumentParser) -> list[tuple[str, str]]:
    out = []
    for v in values:
        label, sep, path = v.partition("=")
        if not sep:
            label, path = Path(v.rstrip("/")).name, v
        if not label or not path:
            p.error(f"--models entry {v!r}: expected LABEL=DIR")
        out.append((label, path))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    p = build_parser()
    args = p.parse_args(argv)
    models = _models(args.models, p)
    import torch

    from megatron_lang.analysis.eval_data import EvaluationError, read_texts
    from megatron_lang.analysis.speed import SpeedError, format_markdown, measure_speed

    try:
        texts = read_texts(args.text)
        report = measure_speed(
            models,
            texts,
            new_tokens=args.new_tokens,
            chunk_tokens=args.prompt_tokens,
            prompts=args.prompts,
            prompt_words=args.prompt_words,
            max_words=args.max_words,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            device=args.device,
            dtype=getattr(torch, args.dtype),
        )
    except (SpeedError, EvaluationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_markdown(report))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = report.to_json()
        data["settings"]["text"] = args.text
        out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
