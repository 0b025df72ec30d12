"""Classification fine-tuning of HF exports (base against adapted) on fixed folds, offline.

Thin CLI over :mod:`megatron_lang.downstream.classify`: each model gets a classification
head and is fine-tuned (full or LoRA) with a class-weighted cross-entropy on every fold
of one labelled task, then tested on the fold's held-out part; writes OUT/results.md
(table: accuracy and macro-F1, mean ± std over folds), OUT/results.json and
OUT/data.jsonl (the examples with their fold).
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # the Debian-section task in Danish (DDTP eval packages), base against CPT, LoRA
  python tools/analysis/classify.py --ddtp --limit 480 --folds 3 --lora \\
      --models base=hf/smollm2 cpt=hf/smollm2-da --out-dir reports/classify
  # any text/label JSONL (labels strings or integers; optional "group" per line),
  # full fine-tuning, two epochs
  python tools/analysis/classify.py --data reviews.jsonl --folds 5 --epochs 2 \\
      --lr 2e-5 --models base=hf/smollm2 cpt=hf/smollm2-da --out-dir reports/reviews
models: HF directories (a megatron_lang checkpoint: export it first with
        tools/convert_hf/megatron_to_hf.py). The first model is the reference the
        others are compared with, fold by fold. No hub access is needed.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from megatron_lang.data.ddtp import APT_LISTS_DIR

    p = argparse.ArgumentParser(
        prog="classify.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", required=True, metavar="LABEL=DIR",
                   help="HF model directories, the reference first")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE.jsonl", help="labelled JSONL: text, label[, group]")
    src.add_argument("--ddtp", action="store_true",
                     help="the Debian-section task from apt's DDTP lists")  # fmt: skip
    p.add_argument("--lang", default="da", help="DDTP language (da)")
    p.add_argument("--lists-dir", default=str(APT_LISTS_DIR), help=f"apt lists ({APT_LISTS_DIR})")
    p.add_argument("--sections", type=int, default=8, help="DDTP: the N most common sections (8)")
    p.add_argument("--ddtp-split", default="eval", choices=["eval", "train", "valid", "all"],
                   help="DDTP: which packages (eval: never in the instruction data)")  # fmt: skip
    p.add_argument("--limit", type=int, default=0,
                   help="sample this many examples with --seed before folding (0: all)")  # fmt: skip
    p.add_argument("--folds", type=int, default=5, help="folds by group/package (5)")
    p.add_argument("--seed", type=int, default=0, help="folds, sampling, head init, order (0)")
    p.add_argument("--lora", action="store_true", help="LoRA adapters + trained head (PEFT)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (8)")
    p.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (16)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs per fold (1)")
    p.add_argument("--lr", type=float, help="learning rate (2e-5 full, 2e-4 LoRA)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (8)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (128)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--out-dir", required=True, help="results folder (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out-dir")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    p = build_parser()
    args = p.parse_args(argv)
    models: dict[str, str] = {}
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep or not label or not path or label in models:
            p.error(f"--models {item!r}: expected LABEL=DIR with distinct labels")
        models[label] = path
    if args.limit < 0:
        p.error(f"--limit {args.limit}: must be >= 0")

    from pathlib import Path

    from megatron_lang.data import ddtp
    from megatron_lang.downstream import classify as c
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        for label, path in models.items():
            if not (Path(path) / "config.json").is_file():
                raise c.ClassificationError(
                    f"--models {label}={path}: not an HF directory (no config.json); export a "
                    "checkpoint with tools/convert_hf/megatron_to_hf.py"
                )
        if args.out_dir and Path(args.out_dir).exists() and not args.overwrite:
            raise c.ClassificationError(f"output {args.out_dir} already exists (--overwrite)")
        if args.ddtp:
            entries = ddtp.load_ddtp(args.lists_dir, args.lang)
            data = c.ddtp_section_data(entries, args.sections, args.ddtp_split,
                                       args.limit or None, args.seed)  # fmt: skip
        else:
            data = c.read_labelled_jsonl(args.data)
            if args.limit and args.limit < len(data.labels):
                import random

                keep = sorted(random.Random(args.seed).sample(range(len(data.labels)), args.limit))
                data = data.subset(keep)
        folds = c.make_folds(data, args.folds, args.seed)
        print(f"{data.source}: {len(data.labels)} examples, {len(data.names)} classes, "
              f"{args.folds} folds (seed {args.seed})", flush=True)  # fmt: skip
        settings = c.FineTuneSettings(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            max_length=args.max_length, seed=args.seed, lora=args.lora, lora_r=args.lora_r,
            lora_alpha=args.lora_alpha, device=args.device, threads=args.threads,
        )  # fmt: skip
        results = c.run_classification(
            models, data, folds, settings, progress=lambda s: print(s, flush=True)
        )
        c.write_results(results, data, folds, args.out_dir, args.overwrite)
    except (c.ClassificationError, ddtp.DdtpError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(c.results_markdown(results))
    print(f"wrote {args.out_dir}/results.md, results.json, data.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
