"""The blend_report CLI: table on stdout, JSON file, help, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.test_blend import write_indexed_dataset
from tools.preprocess.blend_report import main

pytestmark = pytest.mark.unit

SPEC = """\
split: "90,10,0"
sources:
  - {name: da_small, path: da, weight: 0.5, max_epochs: 4, language: da}
  - {name: en_big, path: en, weight: 0.5, language: en}
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    write_indexed_dataset(tmp_path / "da", [100] * 10, seed=1)  # 900 training tokens
    write_indexed_dataset(tmp_path / "en", [100] * 200, seed=2)
    path = tmp_path / "blend.yaml"
    path.write_text(SPEC)
    return path


def test_table_and_json(spec_path, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--blend", str(spec_path), "--total-tokens", "1e4", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "da_small" in table and "en_big" in table and "epochs" in table
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["sources"]}
    assert rows["da_small"]["tokens_available"] == 900
    assert rows["da_small"]["epochs"] == pytest.approx(4.0)  # 5,000 wanted, 3,600 allowed
    assert rows["en_big"]["tokens_drawn"] == pytest.approx(6400)
    assert sum(r["share"] for r in data["sources"]) == pytest.approx(1.0)
    assert all(r["epochs"] <= 4 + 1e-9 for r in data["sources"])


def test_seq_length_adds_sample_caps(spec_path, tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["--blend", str(spec_path), "--total-tokens", "6400", "--seq-length", "32"]
    assert main([*argv, "--json", str(out)]) == 0
    assert "samples of 32 tokens: 200 in total" in capsys.readouterr().out
    rows = json.loads(out.read_text())["sources"]
    assert rows[0]["samples_cap"] == 4 * ((900 - 1) // 32)
    assert rows[0]["samples_drawn"] <= rows[0]["samples_cap"]
    assert rows[1]["samples_cap"] is None
    assert rows[0]["samples_drawn"] + rows[1]["samples_drawn"] == 200


def test_errors_exit_2_with_a_message(spec_path, capsys):
    spec_path.write_text(SPEC.replace("language: en}", "max_epochs: 2, language: en}"))
    assert main(["--blend", str(spec_path), "--total-tokens", "1e12"]) == 2
    assert "cannot supply" in capsys.readouterr().err
    spec_path.write_text(SPEC.replace("weight: 0.5, max", "weight: -1, max"))
    assert main(["--blend", str(spec_path), "--total-tokens", "1e4"]) == 2
    assert "source 'da_small': 'weight' must be > 0" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--total-tokens 250e9" in text
