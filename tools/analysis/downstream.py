"""Downstream tasks on HF exports and Megatron checkpoints through lm-evaluation-harness, offline.

Thin CLI over :mod:`megatron_lang.downstream`: runs the tasks of a folder made by
build_downstream_data.py on each model (in order: before -> after), then writes
OUT/results.md (table), OUT/results.json and OUT/results.png (one panel per task).
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # base model against the adapted one, every task of the folder
  python tools/analysis/downstream.py --data eval/da --out-dir reports/downstream \\
      --models smollm2=hf/smollm2 cpt=runs/da
  # a chat model: prompts go through its chat template (LABEL listed in --chat)
  python tools/analysis/downstream.py --data eval/da --out-dir reports/sft \\
      --models cpt=hf/smollm2-da sft=hf/smollm2-da-chat --chat sft \\
      --tasks da_ddtp_translate --limit 50
models: HF directories; a megatron_lang checkpoint or run folder is exported to HF first
        (OUT/exports/LABEL). No hub access: HF_HUB_OFFLINE=1 for the run.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="downstream.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="folder of build_downstream_data.py")
    p.add_argument("--models", nargs="+", required=True, metavar="LABEL=PATH")
    p.add_argument("--chat", nargs="+", default=[], metavar="LABEL",
                   help="models evaluated through their chat template")  # fmt: skip
    p.add_argument("--tasks", nargs="+", help="task names (default: all in --data)")
    p.add_argument("--out-dir", default="reports/downstream", help="results folder")
    p.add_argument("--limit", type=int, help="documents per task (default: all)")
    p.add_argument("--batch-size", type=int, default=4, help="lm-eval batch size (4)")
    p.add_argument("--max-length", type=int, default=1024, help="context in tokens (1024)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    p = build_parser()
    args = p.parse_args(argv)
    from megatron_lang.downstream.harness import ModelSpec

    models = []
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = item.rstrip("/").rsplit("/", 1)[-1], item
        if not label or not path or label in {m.label for m in models}:
            p.error(f"--models {item!r}: expected LABEL=PATH with distinct labels")
        models.append(ModelSpec(label, path, chat=label in args.chat))
    unknown = set(args.chat) - {m.label for m in models}
    if unknown:
        p.error(f"--chat {sorted(unknown)}: no such model label")

    from megatron_lang.downstream import report
    from megatron_lang.downstream.data import DownstreamDataError
    from megatron_lang.downstream.harness import run_tasks
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        results = run_tasks(
            models, args.data, args.tasks, out_dir=args.out_dir, limit=args.limit,
            batch_size=args.batch_size, max_length=args.max_length, device=args.device,
        )  # fmt: skip
    except (DownstreamDataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.format_table(results))
    paths = report.write_report(results, args.out_dir)
    print("wrote " + ", ".join(str(x) for x in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
