"""The preprocessing CLIs, called through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from megatron_lang.data.indexed import IndexedDatasetReader, bin_path
from tools.preprocess import (
    build_html_corpus,
    inspect_dataset,
    merge_datasets,
    preprocess_data,
    validate_dataset,
)

pytestmark = pytest.mark.unit

CLIS = [preprocess_data, merge_datasets, inspect_dataset, validate_dataset, build_html_corpus]


@pytest.mark.parametrize("cli", CLIS, ids=[c.__name__.rsplit(".", 1)[1] for c in CLIS])
def test_help_has_examples(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "usage:" in out


@pytest.fixture
def dataset(tmp_path, gimp_jsonl, bpe_tokenizer, capsys):
    prefix = tmp_path / "gimp"
    argv = ["--input", str(gimp_jsonl), "--output-prefix", str(prefix)]
    argv += ["--tokenizer", str(bpe_tokenizer), "--append-eod", "--no-progress"]
    assert preprocess_data.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["documents"] == 75 and result["backend"] == "gigatoken"
    return f"{prefix}_text_document"


def test_preprocess_fail_mode_exit_status(tmp_path, bpe_tokenizer, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    argv = ["--input", str(bad), "--output-prefix", str(tmp_path / "o")]
    assert preprocess_data.main(argv + ["--tokenizer", str(bpe_tokenizer)]) == 1
    assert f"{bad}:2: missing_key" in capsys.readouterr().err
    argv += ["--tokenizer", str(bpe_tokenizer), "--on-error", "skip"]
    assert preprocess_data.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["skipped_total"] == 1


def test_validate_cli(dataset, capsys):
    assert validate_dataset.main([dataset + ".bin"]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    data = bin_path(dataset).read_bytes()
    bin_path(dataset).write_bytes(data[: len(data) // 2])
    assert validate_dataset.main([dataset]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"INVALID {dataset}:") and "bytes, but the index describes" in err


def test_inspect_cli(dataset, bpe_tokenizer, gimp_texts, capsys):
    argv = [dataset, "--tokenizer", str(bpe_tokenizer), "--decode", "7"]
    assert inspect_dataset.main(argv) == 0
    out = capsys.readouterr().out
    assert "dtype     uint16" in out and "documents 75" in out and "histogram" in out
    decoded = out.split("--- document 7: ")[1].split("\n", 1)[1]
    assert decoded.startswith(gimp_texts[7]) and decoded.endswith("<|endoftext|>\n")
    assert inspect_dataset.main([dataset, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 75 and sum(b["documents"] for b in stats["histogram"]) == 75
    assert inspect_dataset.main([dataset, "--decode", "75"]) == 1


def test_merge_cli(dataset, tmp_path, capsys):
    out = str(tmp_path / "merged")
    assert merge_datasets.main(["--input", dataset, dataset, "--output-prefix", out]) == 0
    assert "150 documents" in capsys.readouterr().out
    merged, part = IndexedDatasetReader(out), IndexedDatasetReader(dataset)
    for d in range(150):
        assert (merged.document(d) == part.document(d % 75)).all()
    assert merge_datasets.main(["--input", str(tmp_path / "nope"), "--output-prefix", out]) == 1


def test_build_html_corpus_cli(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert (
        build_html_corpus.main(["--output", str(out), "--languages", "nn", "--max-docs", "3"]) == 0
    )
    assert "3 documents" in capsys.readouterr().out
    assert [json.loads(x)["lang"] for x in out.read_text().splitlines()] == ["nn"] * 3
    assert build_html_corpus.main(["--output", str(out), "--root", str(tmp_path)]) == 1


def test_empty_input_warns_loudly_and_fails_with_fail_on_empty(tmp_path, bpe_tokenizer, capsys):
    """An empty input used to exit 0 with an empty dataset and no word about it."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    prefix = tmp_path / "o"
    argv = ["--input", str(empty), "--output-prefix", str(prefix)]
    argv += ["--tokenizer", str(bpe_tokenizer), "--no-progress"]
    assert preprocess_data.main(argv) == 0
    err = capsys.readouterr().err
    assert "no documents in 1 input file(s)" in err and "EMPTY" in err and str(empty) in err
    for f in tmp_path.glob("o*"):
        f.unlink()
    assert preprocess_data.main(argv + ["--fail-on-empty"]) == 1
    assert "nothing written (--fail-on-empty)" in capsys.readouterr().err
    assert not list(tmp_path.glob("o*.bin")) and not list(tmp_path.glob("o*.idx"))
