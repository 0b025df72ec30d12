"""Tokenizer backends: gigatoken only when it matches the reference; common interface."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_lang.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.unit


def _docs(tok, texts):
    ids, lengths = tok.encode_batch(texts)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return [ids[offsets[i] : offsets[i + 1]] for i in range(len(texts))]


def test_smollm2_falls_back_to_hf_with_reason(smollm2_tokenizer_dir, gimp_texts, caplog):
    tok, spec, reason = load_tokenizer(smollm2_tokenizer_dir, sample=gimp_texts[:5])
    assert tok.backend == spec.backend == "hf"
    assert reason.startswith("gigatoken cannot load it") and reason.endswith("using hf")
    assert tok.vocab_size == 49152
    # tokenizer_config.json of SmolLM2-Instruct names <|im_end|> as eos and <|im_start|> as bos
    assert (tok.eod_id, tok.bos_id) == (2, 1)
    with pytest.raises(ValueError, match="--backend gigatoken"):
        load_tokenizer(smollm2_tokenizer_dir, backend="gigatoken")


def test_smollm2_decode_round_trip(smollm2_tokenizer_dir, gimp_texts):
    tok, _, _ = load_tokenizer(smollm2_tokenizer_dir, backend="hf")
    for text, ids in zip(gimp_texts, _docs(tok, gimp_texts)):
        assert tok.decode(ids) == text


@pytest.mark.parametrize("which", ["bpe_tokenizer", "sp_model"])
def test_gigatoken_chosen_and_identical(request, which, gimp_texts):
    path = request.getfixturevalue(which)
    fast, spec, reason = load_tokenizer(path, sample=gimp_texts[:10])
    assert fast.backend == spec.backend == "gigatoken", reason
    ref_backend = "sentencepiece" if which == "sp_model" else "hf"
    ref, _, _ = load_tokenizer(path, backend=ref_backend)
    assert ref.backend == ref_backend
    assert (fast.vocab_size, fast.eod_id, fast.bos_id) == (ref.vocab_size, ref.eod_id, ref.bos_id)
    for a, b in zip(_docs(fast, gimp_texts), _docs(ref, gimp_texts)):
        np.testing.assert_array_equal(a.astype(np.int64), b)
    for text, ids in zip(gimp_texts, _docs(fast, gimp_texts)):
        assert fast.decode(ids) == text
    rebuilt = spec.build()  # what worker processes load: gigatoken only, same ids
    assert rebuilt.backend == "gigatoken" and rebuilt._reference is None
    assert (rebuilt.vocab_size, rebuilt.eod_id, rebuilt.bos_id) == (
        ref.vocab_size,
        ref.eod_id,
        ref.bos_id,
    )
    ids, _ = rebuilt.encode_batch(gimp_texts[:1])
    assert rebuilt.decode(ids) == gimp_texts[0]


def test_gigatoken_mismatch_falls_back(bpe_tokenizer, monkeypatch):
    import megatron_lang.data.tokenizer as tokenizer

    def wrong(self, texts):
        ids, lengths = real(self, texts)
        return ids + 1, lengths

    real = tokenizer.GigatokenTokenizer.encode_batch
    monkeypatch.setattr(tokenizer.GigatokenTokenizer, "encode_batch", wrong)
    tok, spec, reason = load_tokenizer(bpe_tokenizer)
    assert tok.backend == "hf" and "ids differ from the reference" in reason


def test_backend_argument_errors(bpe_tokenizer, sp_model, tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        load_tokenizer(bpe_tokenizer, backend="fast")
    with pytest.raises(ValueError, match="needs a SentencePiece"):
        load_tokenizer(bpe_tokenizer, backend="sentencepiece")
    with pytest.raises(ValueError, match="SentencePiece model needs"):
        load_tokenizer(sp_model, backend="hf")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    tok, _, _ = load_tokenizer(bpe_tokenizer, backend="hf", eod_token="<|begin_of_text|>")
    assert tok.eod_id == 1
