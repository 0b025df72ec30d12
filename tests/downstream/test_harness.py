"""Downstream tasks through lm-evaluation-harness, offline, on the real SmolLM2-135M."""

from __future__ import annotations

import json
import os

import pytest

from tools.analysis import build_downstream_data, downstream

pytestmark = pytest.mark.unit


def test_lm_eval_bits_per_byte_equals_ours_and_the_report_is_written(
    tmp_path, gimp_texts, smollm2_fp32_dir, monkeypatch
):
    """lm-eval's bits per byte on held-out Danish text equals tools/analysis/evaluate.py's
    on the same text (within 1 %; the scoring is the same: a prefix token, every text token
    scored once), offline; a multiple-choice task runs beside it; table, JSON and plot."""
    from megatron_lang.analysis.perplexity import evaluate_models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    danish = [t[:1200] for t in gimp_texts[:25]][:6]
    src = tmp_path / "da.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in danish))
    data = tmp_path / "eval"
    assert build_downstream_data.main(
        ["--output", str(data), "--no-ddtp", "--text", f"gimp_da={src}"]
    ) == 0  # fmt: skip
    out = tmp_path / "report"
    argv = ["--data", str(data), "--models", f"smollm2={smollm2_fp32_dir}", "--out-dir",
            str(out), "--max-length", "512", "--device", "cpu", "--batch-size", "2"]  # fmt: skip
    assert downstream.main(argv) == 0
    assert "HF_HUB_OFFLINE" not in os.environ  # restored after the run
    result = json.loads((out / "results.json").read_text())
    theirs = result["results"]["smollm2"]["gimp_da_bpb"]["bits_per_byte"]["value"]
    ours = evaluate_models({"smollm2": str(smollm2_fp32_dir)}, {"da": str(src)}, seq_length=512,
                           progress=False).get("smollm2", "da").bits_per_byte  # fmt: skip
    assert theirs == pytest.approx(ours, rel=0.01), (theirs, ours)
    assert 0.5 < ours < 5
    table = (out / "results.md").read_text()
    assert "gimp_da_bpb" in table and "bits_per_byte" in table
    assert (out / "results.png").stat().st_size > 1000
    assert downstream.main([*argv, "--tasks", "nope"]) == 2
    # a chat model (SmolLM2-Instruct has a template), two documents only
    chat = tmp_path / "chat"
    argv = ["--data", str(data), "--models", f"smollm2={smollm2_fp32_dir}", "--chat", "smollm2",
            "--limit", "2", "--out-dir", str(chat), "--max-length", "512"]  # fmt: skip
    assert downstream.main(argv) == 0
    result = json.loads((chat / "results.json").read_text())
    assert result["models"][0]["chat"] is True and result["settings"]["limit"] == 2
    with pytest.raises(SystemExit):  # a --chat label that names no model
        downstream.main(["--data", str(data), "--models", f"a={smollm2_fp32_dir}", "--chat", "b"])
