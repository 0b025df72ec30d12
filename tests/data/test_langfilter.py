"""Language filter and document splits: real Danish GIMP pages, and bad input."""

from __future__ import annotations

import json

import pytest

from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus, iter_html_documents
from megatron_lang.data.langfilter import filter_paragraphs, is_language
from megatron_lang.data.splits import SplitError, split_jsonl
from tools.preprocess import build_html_corpus as corpus_cli
from tools.preprocess import split_corpus

pytestmark = pytest.mark.unit

DANISH = "Værktøjet bruges til at markere et område i billedet, og det kan ikke fortrydes her."
ENGLISH = "The tool is used to select an area of the image, and this cannot be undone here."


def test_is_language_tells_danish_from_english():
    assert is_language(DANISH, "da")
    assert not is_language(ENGLISH, "da")
    assert not is_language("Filtre til sløring", "da")  # too short to tell
    with pytest.raises(KeyError, match="known"):
        is_language(DANISH, "xx")


def test_filter_paragraphs_keeps_only_the_language():
    text, stats = filter_paragraphs(f"{ENGLISH}\n{DANISH}\n\n{ENGLISH}", "da")
    assert text == DANISH
    assert (stats.kept, stats.dropped) == (1, 2)
    assert stats.dropped_chars == 2 * len(ENGLISH)
    assert filter_paragraphs(ENGLISH, "en")[0] == ENGLISH  # nothing to tell English from


def _gimp(lang: str) -> None:
    if not (GIMP_HELP_ROOT / lang).is_dir():
        pytest.fail(f"{GIMP_HELP_ROOT / lang} missing: apt-get install gimp-help-{lang}")


def test_real_danish_manual_is_mostly_english_and_the_filter_finds_the_danish(tmp_path):
    _gimp("da")
    _gimp("en")
    out, held = tmp_path / "da.jsonl", tmp_path / "da_heldout.jsonl"
    stats = build_html_corpus(out, ["da"], keep_language=True, heldout=held, heldout_every=5)
    # most of the Danish manual is untranslated English: the filter drops most characters
    assert stats.filtered_characters > 3 * stats.characters
    docs = [json.loads(x) for x in out.read_text().splitlines()]
    held_docs = [json.loads(x) for x in held.read_text().splitlines()]
    assert len(docs) + len(held_docs) == stats.documents
    assert len(held_docs) == stats.heldout_documents == stats.documents // 5
    assert not {d["source"] for d in docs} & {d["source"] for d in held_docs}
    paras = [p for d in docs + held_docs for p in d["text"].split("\n")]
    assert all(is_language(p, "da") for p in paras)
    assert sum(len(d["text"]) for d in docs + held_docs) == stats.characters > 100_000
    # and English pages of the English manual are almost never taken for Danish
    english = [
        p for r in iter_html_documents(GIMP_HELP_ROOT / "en", "en") for p in r["text"].split("\n")
    ][:5000]
    assert sum(is_language(p, "da") for p in english) < 0.005 * len(english)


def test_corpus_cli_errors(tmp_path, capsys):
    (tmp_path / "help" / "xx").mkdir(parents=True)
    argv = ["--root", str(tmp_path / "help"), "--output", str(tmp_path / "o.jsonl")]
    assert corpus_cli.main([*argv, "--languages", "xx", "--keep-language"]) == 1
    assert "no function-word list for 'xx'" in capsys.readouterr().out
    assert corpus_cli.main([*argv, "--languages", "xx", "--heldout", "h", "--heldout-every", "1"])
    assert not (tmp_path / "o.jsonl").exists()


def test_split_jsonl(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n\n" for i in range(10)))
    tr, ho = tmp_path / "t.jsonl", tmp_path / "h.jsonl"
    argv = ["--input", str(src), "--train", str(tr), "--heldout", str(ho), "--every", "4"]
    assert split_corpus.main(argv) == 0
    held = [json.loads(x)["text"] for x in ho.read_text().splitlines()]
    train = [json.loads(x)["text"] for x in tr.read_text().splitlines()]
    assert held == ["doc 3", "doc 7"]
    assert sorted(train + held) == sorted(f"doc {i}" for i in range(10))
    # bad input: the line is named and nothing is written
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(SplitError, match=r"bad.jsonl:2: no string field 'text'"):
        split_jsonl(bad, tmp_path / "t2.jsonl", tmp_path / "h2.jsonl", 2)
    assert not (tmp_path / "t2.jsonl").exists() and not (tmp_path / "h2.jsonl").exists()
    bad.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(SplitError, match=r"bad.jsonl:2: not JSON"):
        split_jsonl(bad, tmp_path / "t2.jsonl", tmp_path / "h2.jsonl", 2)
    with pytest.raises(SplitError, match="nothing to hold out"):
        split_jsonl(src, tmp_path / "t3.jsonl", tmp_path / "h3.jsonl", 50)
    assert split_corpus.main([*argv[:6], "--every", "1"]) == 2
    assert "every=1" in capsys.readouterr().err
