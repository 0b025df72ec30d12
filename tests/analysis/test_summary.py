"""The run summary: reports in, table/verdict/plots out; malformed reports named."""

from __future__ import annotations

import json

import pytest

from megatron_lang.analysis.summary import SummaryError, build_summary, format_summary
from tools.analysis import summary as summary_cli

pytestmark = pytest.mark.unit


def _reports(tmp_path, after_da: float):
    fert = {
        "tokenizers": {"base": {"vocab_size": 100}, "ext": {"vocab_size": 120}},
        "results": [
            {"corpus": c, "tokenizer": t, "fertility_whitespace": f, "chars_per_token": 3.0}
            for c, t, f in [("da", "base", 2.6), ("da", "ext", 2.1), ("en", "base", 1.5)]
        ],
    }
    rows = []
    for model, da, en in [("base", 12.0, 4.6), ("cpt", after_da, 4.7)]:
        for lang, lpw in (("da", da), ("en", en)):
            rows.append(
                {
                    "model": model,
                    "language": lang,
                    "loss_per_word": lpw,
                    "bits_per_word": lpw / 0.693,
                    "tokens_per_word": 2.0,
                    "tokens": 10,
                    "words": 5,
                }
            )
    metrics = [
        {"step": 1, "loss": 6.0, "loss/da": 6.5, "stage": 0, "step_time_s": 2.0},
        {"step": 2, "loss": 5.0, "loss/da": 5.5, "stage": 1, "step_time_s": 3.0},
        {"step": 2, "valid/da/loss": 5.1, "valid/en/en_replay/loss": 3.0},
    ]
    (tmp_path / "f.json").write_text(json.dumps(fert))
    (tmp_path / "e.json").write_text(json.dumps({"results": rows}))
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, metrics)) + "\n")
    (tmp_path / "g.json").write_text(
        json.dumps({"generations": [{"prompt": "Det", "continuation": " er", "new_tokens": 1}]})
    )
    (tmp_path / "t.tsv").write_text("corpus\t3\ntraining\t100\n")
    return [
        "--fertility", str(tmp_path / "f.json"),
        "--evaluation", str(tmp_path / "e.json"),
        "--metrics", str(tmp_path / "m.jsonl"),
        "--generation", str(tmp_path / "g.json"),
        "--timings", str(tmp_path / "t.tsv"),
        "--language", "da", "--before", "base", "--after", "cpt",
        "--out-dir", str(tmp_path / "out"),
    ]  # fmt: skip


def test_summary_table_verdict_and_plots(tmp_path, capsys):
    argv = _reports(tmp_path, after_da=10.0)
    assert summary_cli.main([*argv, "--require-improvement"]) == 0
    text = capsys.readouterr().out
    assert "| ext       | 120   | 2.100 | -     |" in text
    assert "da loss per word: base 12.000 -> cpt 10.000 (-16.7 %): lower after training" in text
    assert "2 steps in 2 stage(s) [1, 1]; training loss 6.000 -> 5.000" in text
    assert "'Det' -> ' er'" in text and "| total    | 103     |" in text
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["verdict"]["improved"] is True
    for png in ("training_loss.png", "loss_per_word.png"):
        assert (tmp_path / "out" / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Language adaptation")


def test_no_improvement_exits_3(tmp_path, capsys):
    argv = _reports(tmp_path, after_da=12.5)
    assert summary_cli.main([*argv, "--require-improvement"]) == 3
    assert "NOT lower after training" in capsys.readouterr().out
    assert summary_cli.main(argv) == 0  # without --require-improvement it only reports


def test_bad_reports_are_named(tmp_path, capsys):
    argv = _reports(tmp_path, after_da=10.0)
    (tmp_path / "e.json").write_text(json.dumps({"results": [{"model": "x"}]}))
    assert summary_cli.main(argv) == 2
    assert "e.json: results[0]: key 'language' is missing" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text('{"step": 1, "loss": 2}\n{bad\n')
    with pytest.raises(SummaryError, match=r"m.jsonl:2: not JSON"):
        build_summary(metrics=tmp_path / "m.jsonl")
    with pytest.raises(SummaryError, match="evaluation report .*missing.json does not exist"):
        build_summary(evaluation=tmp_path / "missing.json")
    _reports(tmp_path, after_da=10.0)
    with pytest.raises(SummaryError, match="no result for model 'base' on 'sv'"):
        build_summary(evaluation=tmp_path / "e.json", language="sv", before="base", after="cpt")


def test_format_without_inputs_is_just_the_title():
    from megatron_lang.analysis.summary import Summary

    assert format_summary(Summary()).strip() == "# Language adaptation: summary"
