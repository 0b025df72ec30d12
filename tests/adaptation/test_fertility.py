"""Fertility: hand-checked counts, the JSON and PNG outputs, real tokenizers, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_lang.adaptation.fertility import (
    WORD_REGEX,
    count_words,
    load_counting_tokenizer,
    measure_fertility,
    plot_fertility,
)
from megatron_lang.adaptation.tokenizer_files import TokenizerError
from tests.adaptation.conftest import mistral_data_file, read_jsonl_texts

pytestmark = pytest.mark.unit

DOCS = ["Hej , verden!", "Rødgrød er godt"]  # 13 + 15 characters; 13 + 17 UTF-8 bytes


def _byte_tokenizer(path: Path) -> Path:
    """Byte-level BPE without merges: one token per UTF-8 byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    return path


def _word_tokenizer(path: Path) -> Path:
    """One token per whitespace-separated word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


@pytest.fixture()
def tiny(tmp_path):
    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS), encoding="utf-8")
    return (
        corpus,
        _byte_tokenizer(tmp_path / "bytes.json"),
        _word_tokenizer(tmp_path / "words.json"),
    )


def test_count_words_both_ways():
    text = "Hej , verden! Rødgrød-med-fløde er it’s 2024.\n\tslut"
    # whitespace: Hej | , | verden! | Rødgrød-med-fløde | er | it’s | 2024. | slut
    # regex:      Hej | verden | Rødgrød-med-fløde | er | it’s | 2024 | slut
    assert count_words(text) == (8, 7)
    assert count_words("   ") == (0, 0)
    assert WORD_REGEX == r"\w+(?:[-'’]\w+)*"


def test_tiny_corpus_known_counts(tiny):
    corpus, byte_tok, word_tok = tiny
    report = measure_fertility([f"tiny={corpus}"], [f"bytes={byte_tok}", f"words={word_tok}"])
    b = report.get("tiny", "bytes")
    assert (b.documents, b.characters, b.words_whitespace, b.words_regex) == (2, 28, 6, 5)
    assert b.tokens == 30  # one token per UTF-8 byte: ø is two bytes
    assert b.fertility_whitespace == pytest.approx(30 / 6)
    assert b.fertility_regex == pytest.approx(30 / 5)
    assert b.chars_per_token == pytest.approx(28 / 30)
    w = report.get("tiny", "words")
    assert w.tokens == 6 and w.fertility_whitespace == 1.0 and w.fertility_regex == 1.2


def test_text_files_and_sampling(tiny, tmp_path):
    _, byte_tok, _ = tiny
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, text in enumerate(DOCS):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    report = measure_fertility([f"txt={folder}"], [str(byte_tok)], max_docs=1)
    row = report.rows[0]
    assert (row.documents, row.tokens, row.tokenizer) == (1, 13, "bytes")
    report = measure_fertility([f"txt={folder}"], [str(byte_tok)], max_chars=5)
    assert report.rows[0].documents == 1  # whole documents until 5 characters were read


def test_cli_writes_json_and_png(tiny, tmp_path, capsys):
    from tools.preprocess import fertility as cli

    corpus, byte_tok, word_tok = tiny
    out_json, out_png = tmp_path / "f.json", tmp_path / "f.png"
    rc = cli.main(
        ["--input", f"tiny={corpus}", "--tokenizer", f"bytes={byte_tok}", f"words={word_tok}",
         "--json", str(out_json), "--plot", str(out_png), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "tok/word(re)" in out and "6.000" in out  # bytes / regex words
    data = json.loads(out_json.read_text())
    assert data["word_counting"]["regex"] == WORD_REGEX
    assert set(data["tokenizers"]) == {"bytes", "words"}
    assert data["tokenizers"]["bytes"]["kind"] == "hf"
    assert data["corpora"]["tiny"]["words_regex"] == 5
    fields = {"corpus", "tokenizer", "documents", "characters", "words_whitespace",
              "words_regex", "tokens", "fertility_whitespace", "fertility_regex",
              "chars_per_token"}  # fmt: skip
    assert len(data["results"]) == 2 and all(set(r) == fields for r in data["results"])
    raw = out_png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(str(out_png)).shape
    assert width > 500 and height > 300


def test_real_tokenizers_on_danish(
    danish_corpus, smollm2_tokenizer_dir, mistral_sp_model, tmp_path
):
    """SmolLM2 (HF), Mistral-7B (SentencePiece .model.v1) and Mistral-Nemo (tekken)."""
    tekken = mistral_data_file("tekken_240718.json")
    specs = [f"smollm2={smollm2_tokenizer_dir}", f"mistral7b={mistral_sp_model}", f"nemo={tekken}"]
    report = measure_fertility([f"da={danish_corpus.heldout}"], specs, max_docs=60)
    kinds = {k: v["kind"] for k, v in report.tokenizers.items()}
    assert kinds == {"smollm2": "hf", "mistral7b": "sentencepiece", "nemo": "tekken"}
    assert report.tokenizers["nemo"]["vocab_size"] == 131072
    for row in report.rows:
        print(
            f"{row.tokenizer}: {row.fertility_regex:.3f} tokens/word, {row.chars_per_token:.2f} chars/token"
        )
        assert (
            1.0 < row.fertility_regex < 4.0 and row.fertility_whitespace < row.fertility_regex * 1.2
        )
    plot_fertility(report, tmp_path / "real.png")
    # the offline tekken conversion gives mistral_common's own ids
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    ref = Tekkenizer.from_file(str(tekken))
    counter = load_counting_tokenizer(str(tekken))
    texts = read_jsonl_texts(danish_corpus.heldout)[:5] + ["  æøå 👍🏽\n"]
    assert counter.count(texts) == [len(ref.encode(t, bos=False, eos=False)) for t in texts]


def test_errors(tiny, tmp_path):
    corpus, byte_tok, _ = tiny
    with pytest.raises(TokenizerError, match="nope.json"):
        measure_fertility([str(corpus)], [str(tmp_path / "nope.json")])
    odd = tmp_path / "odd.json"
    odd.write_text('{"hello": 1}')
    with pytest.raises(TokenizerError, match="odd.json: unknown tokenizer type"):
        measure_fertility([str(corpus)], [str(odd)])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x07not a model at all")
    with pytest.raises(TokenizerError, match="junk.bin: unknown tokenizer type"):
        measure_fertility([str(corpus)], [str(junk)])
    with pytest.raises(TokenizerError, match="missing.jsonl"):
        measure_fertility([str(tmp_path / "missing.jsonl")], [str(byte_tok)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TokenizerError, match="empty.jsonl: empty corpus"):
        measure_fertility([str(empty)], [str(byte_tok)])
    with pytest.raises(TokenizerError, match="not unique"):
        measure_fertility([str(corpus)], [f"a={byte_tok}", f"a={byte_tok}"])
