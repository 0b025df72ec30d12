"""Mean-pooled sequence embeddings of texts from a checkpoint, written as .npy or safetensors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  # one text per line; bidirectional attention (a model trained with objective.bidirectional)
  python tools/analysis/embed.py runs/l31-da-enc/iter_0001000 texts.txt --out emb.npy

  # JSONL with a "text" field, causal attention, safetensors output (tensor "embeddings")
  python tools/analysis/embed.py runs/l31-da/iter_0010000 docs.jsonl --causal \\
      --out emb.safetensors --max-length 256

exit status: 0 done, 2 bad input (no such file, empty input, checkpoint without tokenizer).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embed",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint folder with megatron_lang.json and tokenizer/")
    p.add_argument("texts", help="text file (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--out", required=True, help="output file: .npy or .safetensors")
    p.add_argument(
        "--causal", action="store_true", help="causal attention (default: bidirectional)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="texts per forward pass")
    p.add_argument("--max-length", type=int, default=512, help="truncate texts to N tokens")
    return p


def read_texts(path: Path) -> list[str]:
    """Non-empty lines of a text file, or the ``text`` fields of a JSONL file."""
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(x)["text"] for x in lines]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_lang.analysis.embeddings import sequence_embeddings
    from megatron_lang.platform import setup_logging

    setup_logging("WARNING")
    src, out = Path(args.texts), Path(args.out)
    if out.suffix not in (".npy", ".safetensors"):
        print("error: --out must end in .npy or .safetensors", file=sys.stderr)
        return 2
    if not src.is_file():
        print(f"error: {src} does not exist", file=sys.stderr)
        return 2
    texts = read_texts(src)
    if not texts:
        print(f"error: {src} has no texts", file=sys.stderr)
        return 2
    try:
        emb = sequence_embeddings(
            args.checkpoint,
            texts,
            bidirectional=not args.causal,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, emb.numpy())
    else:
        from safetensors.torch import save_file

        save_file({"embeddings": emb.contiguous()}, str(out))
    print(f"{len(texts)} embeddings of size {emb.shape[1]} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
