"""Vocabulary extension on real tokenizers: SmolLM2 (byte-level BPE) and Mistral-7B (SentencePiece)."""

from __future__ import annotations

import json

import pytest

from megatron_lang.adaptation.fertility import measure_fertility
from megatron_lang.adaptation.tokenizer_files import TokenizerError
from megatron_lang.adaptation.vocab_extend import extend_tokenizer
from tests.adaptation.conftest import read_jsonl_texts
from tests.adaptation.test_tokenizer_train import EDGE_CASES

pytestmark = pytest.mark.unit


def _texts(danish_corpus, english_corpus):
    return (
        read_jsonl_texts(danish_corpus.heldout) + read_jsonl_texts(english_corpus)[:60] + EDGE_CASES
    )


def test_smollm2_extended_keeps_base_ids(smollm2_tokenizer_dir, smollm2_extended_tokenizer_dir):
    from tokenizers import Tokenizer

    base = Tokenizer.from_file(str(smollm2_tokenizer_dir / "tokenizer.json"))
    ext = Tokenizer.from_file(str(smollm2_extended_tokenizer_dir / "tokenizer.json"))
    base_vocab, ext_vocab = (
        base.get_vocab(with_added_tokens=True),
        ext.get_vocab(with_added_tokens=True),
    )
    assert all(ext_vocab[t] == i for t, i in base_vocab.items())
    n = len(base_vocab)
    assert n == 49152 and sorted(ext_vocab.values()) == list(range(len(ext_vocab)))
    base_added = {t.content: (i, t.special) for i, t in base.get_added_tokens_decoder().items()}
    ext_added = {t.content: (i, t.special) for i, t in ext.get_added_tokens_decoder().items()}
    assert base_added["<|endoftext|>"] == (0, True) and all(
        ext_added[k] == v for k, v in base_added.items()
    )
    report = json.loads((smollm2_extended_tokenizer_dir / "extension_report.json").read_text())
    assert report["base_size"] == n and report["first_new_id"] == n
    assert report["final_size"] == len(ext_vocab) == n + report["added"] + 1  # + <mask>
    assert report["added"] > 1000 and report["merges_added"] >= report["added"] - 256
    assert ext_vocab["<mask>"] == len(ext_vocab) - 1
    # the chat template and special-token settings of the base folder are kept
    assert (smollm2_extended_tokenizer_dir / "chat_template.jinja").is_file()


def test_smollm2_extended_round_trip(
    smollm2_tokenizer_dir, smollm2_extended_tokenizer_dir, danish_corpus, english_corpus
):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    ext = AutoTokenizer.from_pretrained(smollm2_extended_tokenizer_dir)
    assert (ext.eos_token, ext.bos_token, ext.mask_token) == (
        base.eos_token,
        base.bos_token,
        "<mask>",
    )
    assert ext.eos_token_id == base.eos_token_id and ext.mask_token_id == len(ext) - 1
    used_new = 0
    for text in _texts(danish_corpus, english_corpus):
        ids = ext.encode(text, add_special_tokens=False)
        assert ext.decode(ids) == text, text[:60]
        # merges are appended after the base's: never more tokens than the base
        assert len(ids) <= len(base.encode(text, add_special_tokens=False))
        used_new += sum(i >= len(base) for i in ids)
    assert used_new > 1000


def test_danish_tokenizers_lower_smollm2_fertility(
    smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, smollm2_extended_tokenizer_dir, danish_corpus
):
    report = measure_fertility(
        [f"da-heldout={danish_corpus.heldout}"],
        [f"smollm2={smollm2_tokenizer_dir}", f"da-bpe-8k={danish_bpe_tokenizer_dir}",
         f"smollm2+da={smollm2_extended_tokenizer_dir}"],
    )  # fmt: skip
    f = {r.tokenizer: r.fertility_regex for r in report.rows}
    print("held-out Danish tokens/word:", {k: round(v, 3) for k, v in f.items()})
    assert f["da-bpe-8k"] < f["smollm2"] and f["smollm2+da"] < f["smollm2"]
    assert f["smollm2+da"] < f["smollm2"] * 0.95


def test_max_new_tokens(smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, tmp_path, danish_corpus):
    from tokenizers import Tokenizer

    report = extend_tokenizer(
        smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, tmp_path / "x", max_new_tokens=100
    )
    assert report.added == 100 and report.final_size == 49152 + 100 and report.candidates > 100
    ext = Tokenizer.from_file(str(tmp_path / "x" / "tokenizer.json"))
    new = Tokenizer.from_file(str(danish_bpe_tokenizer_dir / "tokenizer.json"))
    base = set(Tokenizer.from_file(str(smollm2_tokenizer_dir / "tokenizer.json")).get_vocab())
    specials = {t.content for t in new.get_added_tokens_decoder().values()}
    expected = [
        t
        for t, _ in sorted(new.get_vocab().items(), key=lambda x: x[1])
        if t not in base and t not in specials
    ]
    added = [ext.id_to_token(i) for i in range(49152, 49252)]
    assert added == expected[:100]  # the first 100 in the new tokenizer's rank order
    for text in read_jsonl_texts(danish_corpus.heldout)[:20] + EDGE_CASES:
        assert ext.decode(ext.encode(text).ids) == text


def test_mistral_sentencepiece_extended(
    mistral_sp_model,
    danish_sp_tokenizer_dir,
    mistral_extended_sp_dir,
    danish_corpus,
    english_corpus,
):
    import sentencepiece as spm
    from tokenizers import Tokenizer

    base = spm.SentencePieceProcessor(model_file=str(mistral_sp_model))
    ext = spm.SentencePieceProcessor(model_file=str(mistral_extended_sp_dir / "tokenizer.model"))
    n = base.get_piece_size()
    assert n == 32000 and ext.get_piece_size() > n + 1000
    assert all(ext.id_to_piece(i) == base.id_to_piece(i) for i in range(n))
    assert (
        (ext.unk_id(), ext.bos_id(), ext.eos_id())
        == (base.unk_id(), base.bos_id(), base.eos_id())
        == (0, 1, 2)
    )
    scores = [ext.get_score(i) for i in range(ext.get_piece_size())]
    assert max(scores[n:]) < min(scores[:n]) and all(
        a > b for a, b in zip(scores[n:], scores[n + 1 :])
    )
    hf = Tokenizer.from_file(str(mistral_extended_sp_dir / "tokenizer.json"))
    used_new = 0
    for text in _texts(danish_corpus, english_corpus):
        ids = ext.encode(text)
        assert ext.decode(ids) == text, text[:60]
        assert hf.encode(text, add_special_tokens=False).ids == ids
        used_new += sum(i >= n for i in ids)
    assert used_new > 1000
    report = measure_fertility(
        [f"da-heldout={danish_corpus.heldout}"],
        [f"mistral7b={mistral_sp_model}", f"da-sp-8k={danish_sp_tokenizer_dir}",
         f"mistral7b+da={mistral_extended_sp_dir}"],
    )  # fmt: skip
    f = {r.tokenizer: r.fertility_regex for r in report.rows}
    print("held-out Danish tokens/word:", {k: round(v, 3) for k, v in f.items()})
    assert f["da-sp-8k"] < f["mistral7b"] and f["mistral7b+da"] < f["mistral7b"] * 0.95


def test_mistral_hf_folder_loads(mistral_extended_sp_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mistral_extended_sp_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert (
        len(tok)
        == json.loads((mistral_extended_sp_dir / "extension_report.json").read_text())["final_size"]
    )
    for text in EDGE_CASES:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_errors(smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, mistral_sp_model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TokenizerError, match="cannot extend a sentencepiece tokenizer"):
        extend_tokenizer(mistral_sp_model, danish_bpe_tokenizer_dir, out)
    with pytest.raises(TokenizerError, match="missing_base: base tokenizer does not exist"):
        extend_tokenizer(tmp_path / "missing_base", danish_bpe_tokenizer_dir, out)
    with pytest.raises(TokenizerError, match="--max-new-tokens"):
        extend_tokenizer(smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, out, max_new_tokens=-1)
    wordlevel = tmp_path / "wl.json"
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel(vocab={"a": 0}, unk_token="a")).save(str(wordlevel))
    with pytest.raises(TokenizerError, match="wl.json: not a BPE"):
        extend_tokenizer(smollm2_tokenizer_dir, wordlevel, out)
    assert not out.exists()
