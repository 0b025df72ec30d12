"""Tokenize text corpora into Megatron indexed datasets (``.bin``/``.idx``).

Thin CLI over :func:`megatron_lang.data.preprocess.preprocess`.
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  # JSONL (also .jsonl.gz/.jsonl.zst, parquet, folders of .txt) with a HF tokenizer
  python tools/preprocess/preprocess_data.py --input corpus/da.jsonl.zst \\
      --output-prefix data/da --tokenizer path/to/hf_tokenizer_dir --append-eod --workers 8
  # -> data/da_text_document.bin/.idx and data/da_summary.json

  # SentencePiece model, two keys (one dataset per key), skip bad lines
  python tools/preprocess/preprocess_data.py --input corpus/ --output-prefix data/nn \\
      --tokenizer tokenizer.model --json-keys text title --on-error skip

  # one sequence per sentence, punkt trained on the corpus and saved for reuse
  python tools/preprocess/preprocess_data.py --input corpus/da.jsonl --output-prefix data/da \\
      --tokenizer tok/ --split-sentences --punkt-params data/da_punkt.json
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    from megatron_lang.data.readers import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_DOCUMENT_BYTES

    p = argparse.ArgumentParser(
        prog="preprocess_data.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", nargs="+", required=True, help="input files and/or folders")
    p.add_argument("--output-prefix", required=True, help="outputs: PREFIX_{key}_document.*")
    p.add_argument(
        "--tokenizer", required=True, help="HF dir / tokenizer.json / SentencePiece .model"
    )
    p.add_argument(
        "--json-keys", nargs="+", default=["text"], help="keys holding text (default: text)"
    )
    p.add_argument(
        "--append-eod", action="store_true", help="append the EOD token to each document"
    )
    p.add_argument("--add-bos", action="store_true", help="prepend the BOS token to each document")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; 0 = one per core)"
    )
    p.add_argument("--split-sentences", action="store_true", help="one sequence per sentence")
    p.add_argument(
        "--punkt-params", help="punkt parameter JSON: loaded if present, else saved there"
    )
    p.add_argument(
        "--punkt-train-chars",
        type=int,
        default=1_000_000,
        help="characters of the corpus to train punkt on (default 1,000,000)",
    )
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="bad documents")
    p.add_argument(
        "--backend", choices=["auto", "gigatoken", "hf", "sentencepiece"], default="auto"
    )
    p.add_argument(
        "--max-document-bytes",
        type=int,
        default=DEFAULT_MAX_DOCUMENT_BYTES,
        help="larger lines/files are bad documents (document_too_large); 0 = no limit",
    )
    p.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help=argparse.SUPPRESS)
    p.add_argument("--eod-token", help="EOD token string (default: the tokenizer's eos_token)")
    p.add_argument("--bos-token", help="BOS token string (default: the tokenizer's bos_token)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-on-empty",
        action="store_true",
        help="exit 1 and write nothing when the inputs hold no document (default: a warning)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from megatron_lang.data.preprocess import PreprocessConfig, PreprocessError, preprocess
    from megatron_lang.data.readers import InputError
    from megatron_lang.platform.logging import setup_logging

    setup_logging()

    config = PreprocessConfig(
        inputs=args.input,
        output_prefix=args.output_prefix,
        tokenizer=args.tokenizer,
        json_keys=args.json_keys,
        append_eod=args.append_eod,
        add_bos=args.add_bos,
        workers=args.workers,
        split_sentences=args.split_sentences,
        punkt_params=args.punkt_params,
        punkt_train_chars=args.punkt_train_chars,
        on_error=args.on_error,
        backend=args.backend,
        max_document_bytes=args.max_document_bytes,
        chunk_bytes=args.chunk_bytes,
        eod_token=args.eod_token,
        bos_token=args.bos_token,
        progress=False if args.no_progress else None,
        fail_on_empty=args.fail_on_empty,
    )
    try:
        summary = preprocess(config)
    except (PreprocessError, InputError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = ("documents", "tokens", "skipped_total", "backend", "seconds", "tokens_per_second")
    print(json.dumps({k: summary[k] for k in keys} | {"summary": str(config.summary_path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
