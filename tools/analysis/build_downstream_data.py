"""Build downstream task data (lm-evaluation-harness tasks) from DDTP and held-out text, offline.

Thin CLI over :mod:`megatron_lang.downstream.data`: OUT/<task>.jsonl, OUT/tasks/<task>.yaml
(lm-eval task definitions rendered from megatron_lang/downstream/tasks/) and
OUT/manifest.json. Only DDTP's eval packages are used (never in the instruction data).
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # once: have apt download the Danish (and English) package description translations
  sudo apt-get update -o Acquire::Languages=da,en
  # the four DDTP tasks (bits per byte, en->da translation, acceptability, section)
  python tools/analysis/build_downstream_data.py --output eval/da
  # plus bits per byte of your own held-out text; fewer documents per task
  python tools/analysis/build_downstream_data.py --output eval/da_small --limit 100 \\
      --text gimp_da=runs/demo/corpus/da_heldout.jsonl
  # then run them
  python tools/analysis/downstream.py --data eval/da --models base=hf/smollm2 cpt=hf/smollm2-da
tasks: <lang>_ddtp_bpb, <lang>_ddtp_translate, <lang>_scala_ddtp, <lang>_ddtp_section,
       <name>_bpb for each --text (docs/downstream.md).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from megatron_lang.data.ddtp import APT_LISTS_DIR

    p = argparse.ArgumentParser(
        prog="build_downstream_data.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output", required=True, help="output folder (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--lang", default="da", help="translation language (da, nb, pl; default da)")
    p.add_argument("--lists-dir", default=str(APT_LISTS_DIR), help=f"apt lists ({APT_LISTS_DIR})")
    p.add_argument("--no-ddtp", action="store_true", help="only the --text tasks")
    p.add_argument("--text", nargs="+", default=[], metavar="NAME=PATH",
                   help="held-out text for <NAME>_bpb (JSONL 'text', .txt, folders)")  # fmt: skip
    p.add_argument("--limit", type=int, default=500,
                   help="documents per DDTP task, sampled with --seed (default 500; 0: all)")  # fmt: skip
    p.add_argument("--sections", type=int, default=8, help="sections to choose among (8)")
    p.add_argument("--seed", type=int, default=0, help="sampling and corruption seed (0)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    p = build_parser()
    args = p.parse_args(argv)
    texts = {}
    for item in args.text:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--text {item!r}: expected NAME=PATH")
        texts[name] = path
    if args.no_ddtp and not texts:
        p.error("--no-ddtp without --text: no task to build")
    if args.limit < 0:
        p.error(f"--limit {args.limit}: must be >= 0")

    from megatron_lang.analysis.eval_data import EvaluationError, read_texts
    from megatron_lang.data import ddtp
    from megatron_lang.downstream import data
    from megatron_lang.platform import setup_logging

    setup_logging()
    try:
        sets, sources = [], []
        if not args.no_ddtp:
            entries = ddtp.load_ddtp(args.lists_dir, args.lang)
            sources += ddtp.find_sources(args.lists_dir, args.lang).all()
            sets.append(data.ddtp_tasks(entries, args.lang, args.seed, args.limit or None,
                                        args.sections))  # fmt: skip
        if texts:
            sets.append(data.text_tasks({n: read_texts(path) for n, path in texts.items()}))
            sources += list(texts.values())
        settings = {"lang": args.lang, "limit": args.limit, "sections": args.sections,
                    "seed": args.seed, "text": texts}  # fmt: skip
        manifest = data.write_task_data(
            data.merge(sets), args.output, sources, settings, args.lang, args.overwrite
        )
    except (data.DownstreamDataError, ddtp.DdtpError, EvaluationError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, info in manifest["tasks"].items():
        print(f"  {name}: {info['documents']} documents")
    print(f"wrote {args.output} (lm-eval tasks in {args.output}/tasks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
