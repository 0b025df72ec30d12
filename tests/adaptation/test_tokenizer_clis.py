"""The tokenizer CLIs, called through ``main(argv)``: help, a real run each, errors."""

from __future__ import annotations

import json

import pytest

from tools.preprocess import extend_vocab, fertility, train_tokenizer

pytestmark = pytest.mark.unit

CLIS = [fertility, train_tokenizer, extend_vocab]


@pytest.mark.parametrize("cli", CLIS, ids=[c.__name__.rsplit(".", 1)[1] for c in CLIS])
def test_help_has_examples(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "usage:" in out and "tools/preprocess/" in out


def test_train_extend_measure(danish_corpus, smollm2_tokenizer_dir, tmp_path, capsys):
    tok = tmp_path / "da_bpe"
    rc = train_tokenizer.main(
        [
            "--input",
            str(danish_corpus.train),
            "--output",
            str(tok),
            "--vocab-size",
            "3000",
            "--max-docs",
            "200",
        ]
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 3000
    ext = tmp_path / "smollm2_da"
    rc = extend_vocab.main(
        [
            "--base",
            str(smollm2_tokenizer_dir),
            "--new",
            str(tok),
            "--output",
            str(ext),
            "--max-new-tokens",
            "500",
            "--mask-token",
            "<mask>",
        ]
    )
    assert rc == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "base size 49152, new tokens added 500, final size 49653"
    rc = fertility.main(
        ["--input", f"da={danish_corpus.heldout}", "--tokenizer", f"base={smollm2_tokenizer_dir}",
         f"ext={ext}", "--max-docs", "30", "--json", str(tmp_path / "f.json"), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    rows = {r["tokenizer"]: r for r in json.loads((tmp_path / "f.json").read_text())["results"]}
    assert rows["ext"]["tokens"] < rows["base"]["tokens"]


def test_errors_exit_1(tmp_path, capsys):
    missing = str(tmp_path / "missing.jsonl")
    assert train_tokenizer.main(["--input", missing, "--output", str(tmp_path / "o")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "hej"}\n')
    assert (
        train_tokenizer.main(
            ["--input", str(corpus), "--output", str(tmp_path / "o"), "--type", "x"]
        )
        == 1
    )
    assert "unknown tokenizer kind 'x'" in capsys.readouterr().err
    assert fertility.main(["--input", str(corpus), "--tokenizer", str(tmp_path / "t.json")]) == 1
    assert "t.json" in capsys.readouterr().err
    assert (
        extend_vocab.main(
            [
                "--base",
                str(tmp_path / "b"),
                "--new",
                str(tmp_path / "n"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "base tokenizer does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
