"""Tokenizer training: HF-loadable output, SentencePiece parity, reproducibility, bad input."""

from __future__ import annotations

import json

import pytest

from megatron_lang.adaptation.tokenizer_files import TokenizerError
from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer
from tests.adaptation.conftest import TOKENIZER_VOCAB, read_jsonl_texts

pytestmark = pytest.mark.unit

EDGE_CASES = [
    "  to foranstillede mellemrum",
    "linje 1\nlinje 2\n\n\tindrykket\r\n",
    "Emoji 👍🏽 og 🇩🇰, matematik ∑ ≠ ½, 日本語, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, \u200b nul-bredde",
    "Æbler, øl og ål på åen: ÆØÅ æøå",
    " x  y ",
    "",
]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_hf_loadable_with_specials(
    kind, danish_bpe_tokenizer_dir, danish_sp_tokenizer_dir, danish_corpus
):
    from transformers import AutoTokenizer

    folder = danish_bpe_tokenizer_dir if kind == "bpe" else danish_sp_tokenizer_dir
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == TOKENIZER_VOCAB
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.mask_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<mask>",
    )
    first = 0 if kind == "bpe" else 1  # SentencePiece: <unk> is id 0
    assert [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.mask_token_id] == [
        first, first + 1, first + 2, first + 3
    ]  # fmt: skip
    report = json.loads((folder / "train_report.json").read_text())
    assert report["documents"] == len(read_jsonl_texts(danish_corpus.train))
    for text in read_jsonl_texts(danish_corpus.heldout)[:40] + EDGE_CASES:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    if kind == "sentencepiece":
        assert (folder / "tokenizer.model").is_file()


def test_sentencepiece_json_matches_library(danish_sp_tokenizer_dir, danish_corpus):
    """Our tokenizer.json gives the sentencepiece library's ids."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(danish_sp_tokenizer_dir / "tokenizer.model"))
    tok = Tokenizer.from_file(str(danish_sp_tokenizer_dir / "tokenizer.json"))
    assert sp.get_piece_size() == tok.get_vocab_size() == TOKENIZER_VOCAB
    for text in read_jsonl_texts(danish_corpus.heldout) + EDGE_CASES:
        assert tok.encode(text, add_special_tokens=False).ids == sp.encode(text), text[:60]


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_reproducible(kind, danish_corpus, tmp_path):
    outs = []
    for name in ("a", "b"):
        config = TrainConfig(
            [str(danish_corpus.train)], str(tmp_path / name), kind, 2000, max_docs=200
        )
        train_tokenizer(config)
        outs.append(_files(tmp_path / name))
    assert outs[0] == outs[1]
    assert {"tokenizer.json", "tokenizer_config.json", "train_report.json"} <= set(outs[0])
    other = TrainConfig([str(danish_corpus.train)], str(tmp_path / "c"), kind, 2100, max_docs=200)
    train_tokenizer(other)
    assert _files(tmp_path / "c")["tokenizer.json"] != outs[0]["tokenizer.json"]


def test_extra_special_tokens(danish_corpus, tmp_path):
    config = TrainConfig(
        [str(danish_corpus.train)], str(tmp_path / "t"), "bpe", 1000, max_docs=50,
        bos_token=None, special_tokens=["<|im_start|>", "<|im_end|>"],
    )  # fmt: skip
    report = train_tokenizer(config)
    assert report["special_tokens"] == {
        "</s>": 0,
        "<pad>": 1,
        "<mask>": 2,
        "<|im_start|>": 3,
        "<|im_end|>": 4,
    }
    cfg = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert "bos_token" not in cfg and cfg["eos_token"] == "</s>"


def test_bad_input(danish_corpus, tmp_path):
    out = tmp_path / "out"
    cases = [
        (TrainConfig([str(tmp_path / "missing.jsonl")], str(out)), "missing.jsonl"),
        (TrainConfig([str(danish_corpus.train)], str(out), "wordpiece"), "unknown tokenizer kind 'wordpiece'"),
        (TrainConfig([str(danish_corpus.train)], str(out), "bpe", 200), "--vocab-size 200 is too small"),
        (TrainConfig([str(danish_corpus.train)], str(out), "sentencepiece", 260), "--vocab-size 260"),
    ]  # fmt: skip
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    cases.append(
        (TrainConfig([str(blank)], str(out)), "empty corpus: no documents in .*blank.jsonl")
    )
    empty_doc = tmp_path / "empty_doc.jsonl"
    empty_doc.write_text('{"text": "   "}\n')
    cases.append((TrainConfig([str(empty_doc)], str(out)), "empty_doc.jsonl:1: empty_document"))
    for config, message in cases:
        with pytest.raises(TokenizerError, match=message):
            train_tokenizer(config)
        assert not out.exists() and not list(tmp_path.glob(".out.incomplete-*"))
    # SentencePiece itself refuses a vocabulary that cannot hold all characters
    with pytest.raises(TokenizerError, match="vocab-size"):
        train_tokenizer(
            TrainConfig([str(danish_corpus.train)], str(out), "sentencepiece", 280, max_docs=50)
        )
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(TokenizerError, match="already exists and is not empty"):
        train_tokenizer(TrainConfig([str(danish_corpus.train)], str(out), "bpe", 1000, max_docs=20))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
