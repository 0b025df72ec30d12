"""Build Danish instruction data (chat JSONL) from Debian's translated package descriptions.

Thin CLI over :mod:`megatron_lang.data.ddtp`: reads the DDTP translations apt keeps
in its lists folder, writes OUT/train.jsonl, OUT/valid.jsonl (OpenAI ``messages``
records) and OUT/manifest.json.  The split is by package name; "eval" packages are
held back for evaluation and never written.
"""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
examples:
  # once: download the Danish (and English) translations of the package descriptions
  sudo apt-get update -o Acquire::Languages=da,en
  python tools/preprocess/build_ddtp_instructions.py --output data/ddtp_da
  # a quick run: 500 descriptions, two tasks, plus UI strings of the installed programs
  python tools/preprocess/build_ddtp_instructions.py --output /tmp/ddtp_small --limit 500 \\
      --tasks describe translate --locale-dir /usr/share/locale/da/LC_MESSAGES
  # then tokenise for fine-tuning
  python tools/preprocess/preprocess_chat.py --input data/ddtp_da/train.jsonl \\
      --output data/ddtp_da_train --tokenizer path/to/hf_dir --seq-length 2048
records: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}],
          "package": "...", "task": "describe|translate|section|summarise|translate_ui"}
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from megatron_lang.data.ddtp import APT_LISTS_DIR, TASKS

    p = argparse.ArgumentParser(
        prog="build_ddtp_instructions.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output", "--out", dest="out", required=True, help="output folder (must not exist)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument(
        "--lists-dir", default=str(APT_LISTS_DIR), help=f"apt lists folder ({APT_LISTS_DIR})"
    )
    p.add_argument("--lang", default="da", help="translation language (default: da)")
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help=f"tasks to make (default: all: {' '.join(TASKS)})",
    )
    p.add_argument(
        "--locale-dir",
        help="also make translate_ui records from the *.mo catalogues in this folder "
        "(e.g. /usr/share/locale/da/LC_MESSAGES)",
    )
    p.add_argument("--valid-fraction", type=float, default=0.05, help="packages in valid (0.05)")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.10,
        help="packages held back for evaluation, never written (0.10)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt wording (0)")
    p.add_argument("--limit", type=int, help="use only the first N descriptions (and N UI strings)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    import itertools

    from megatron_lang.data import ddtp

    start = time.perf_counter()
    try:
        if args.limit is not None and args.limit < 0:
            raise ddtp.DdtpError(f"--limit must be >= 0 (got {args.limit})")
        ddtp.package_split("", args.valid_fraction, args.eval_fraction)  # checks fractions
        sources = ddtp.find_sources(args.lists_dir, args.lang).all()
        entries = ddtp.load_ddtp(args.lists_dir, args.lang)
        if args.limit is not None:
            entries = entries[: args.limit]
        fractions = {"valid_fraction": args.valid_fraction, "eval_fraction": args.eval_fraction}
        splits = ddtp.assign_splits(entries, **fractions)
        # eval records are made only to be counted: write_splits never writes them
        records = ddtp.build_instructions(
            entries, args.tasks, args.seed, **fractions, include_eval=True
        )
        if args.locale_dir:
            ui = ddtp.build_catalogue_instructions(
                args.locale_dir, args.seed, **fractions, include_eval=True
            )
            if args.limit is not None:
                ui = itertools.islice(ui, args.limit)
            records = itertools.chain(records, ui)
            sources += ddtp.catalogue_files(args.locale_dir)
        extra = {
            "lang": args.lang,
            "tasks": list(args.tasks),
            "seed": args.seed,
            **fractions,
            "limit": args.limit,
            "descriptions": {s: sum(v == s for v in splits.values()) for s in ddtp.SPLITS},
        }
        manifest = ddtp.write_splits(records, args.out, sources, extra, args.overwrite)
    except ddtp.DdtpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    took = time.perf_counter() - start
    d = manifest["descriptions"]
    print(
        f"{args.out}: {len(entries)} descriptions (train {d['train']}, valid {d['valid']}, "
        f"eval {d['eval']} held back) in {took:.1f} s"
    )
    for split in ddtp.WRITTEN_SPLITS:
        c = manifest["counts"][split]
        tasks = ", ".join(f"{k} {v}" for k, v in c.items() if k != "total")
        n = manifest["packages"][split]
        print(f"  {split}.jsonl: {c['total']} records ({tasks}); {n} packages")
    print(f"  {manifest['eval_records_dropped']} records of eval packages not written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
