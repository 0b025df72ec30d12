"""The demo (examples/demo.sh, `make demo`) end to end at a small size.

Real artefacts throughout: SmolLM2-135M from the GGUF, the Danish and English GIMP
manuals, the extended tokenizer, 3 gloo ranks at TP=3, the HF export reloaded by
transformers. Fewer steps, shorter sequences and fewer English pages than `make demo`.
The script runs the documented CLIs (tests/docs credits their flags to this test):
gguf_to_hf, build_html_corpus, fertility, train_tokenizer, extend_vocab, hf_to_megatron,
preprocess_data, blend_report, megatron_lang.train, megatron_to_hf, evaluate, generate,
summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "EMB_STEPS": "4",
    "FULL_STEPS": "4",
    "SEQ": "128",
    "GBS": "4",
    "NEW_VOCAB": "2000",
    "EN_DOCS": "40",
    "EVAL_SEQ": "128",
    "GEN_TOKENS": "8",
}


def _run(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "WORK": str(work), **SMALL, **env}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full.pop(key, None)
    return subprocess.run(
        ["bash", str(REPO / "examples" / "demo.sh"), *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_small_demo_adapts_smollm2_to_danish(tmp_path):
    work = tmp_path / "demo"
    out = _run(work, "train.eval_interval=4", BEFORE="smollm2-da-init")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    # progress for every step
    for k in range(1, 11):
        assert f"== [{k}/10]" in out.stdout
    summary = json.loads((work / "summary.json").read_text())

    fert = {(r["corpus"], r["tokenizer"]): r["tokens_per_word"] for r in summary["fertility"]}
    assert fert[("da", "smollm2-da")] < 0.9 * fert[("da", "smollm2")]  # the new tokens are used
    assert fert[("en", "smollm2-da")] <= fert[("en", "smollm2")]

    ev = {(r["model"], r["language"]): r for r in summary["evaluation"]}
    assert set(ev) == {
        (m, lang) for m in ("smollm2", "smollm2-da-init", "cpt") for lang in "da en".split()
    }
    # same words whatever the tokenizer; the Danish loss per word falls with training
    assert ev[("smollm2", "da")]["words"] == ev[("cpt", "da")]["words"] > 1000
    assert summary["verdict"]["improved"]
    assert ev[("cpt", "da")]["loss_per_word"] < ev[("smollm2-da-init", "da")]["loss_per_word"]

    t = summary["training"]
    assert t["steps"] == 8 and t["steps_per_stage"] == [4, 4]
    # the next step's batches are built while a step runs: after the first step (built
    # while the model waited) a step waits for its data a negligible time
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "data_wait_s" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    later = [r["data_wait_s"] for r in train[1:]]
    step_s = sorted(r["step_time_s"] for r in train)[len(train) // 2]
    assert max(later) < 0.02 * step_s, (later, step_s)
    gens = summary["generations"]
    assert len(gens) == 2 and all(g["new_tokens"] > 0 and g["continuation"].strip() for g in gens)
    # one output folder: TensorBoard events, plots, the export, the report
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    for png in ("fertility.png", "training_loss.png", "loss_per_word.png"):
        assert (work / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert (work / "smollm2-da-hf" / "config.json").is_file()
    assert "lower after training" in (work / "summary.md").read_text()
    assert "max abs logit diff" in out.stdout  # the export was checked against Megatron


def test_missing_text_says_what_to_install(tmp_path):
    out = _run(tmp_path / "w", GIMP_HELP=str(tmp_path / "no-help"))
    assert out.returncode == 2
    assert "sudo apt-get install gimp-help-da gimp-help-en" in out.stderr
    assert "CORPUS=/path/to/danish.jsonl" in out.stderr
    assert not (tmp_path / "w" / "smollm2-hf").exists()  # nothing slow was started
