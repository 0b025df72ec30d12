"""Punkt sentence splitting trained on the corpus: lossless, parameters round-trip."""

from __future__ import annotations

import pytest

from megatron_lang.data.sentences import (
    SentenceSplitter,
    load_params,
    params_to_dict,
    save_params,
    train_punkt,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def params(gimp_texts):
    return train_punkt(gimp_texts, max_chars=400_000)


def test_split_is_lossless_and_splits(params, gimp_texts):
    splitter = SentenceSplitter(params)
    total = 0
    for text in gimp_texts:
        pieces = splitter.split(text)
        assert "".join(pieces) == text
        assert all(pieces)
        total += len(pieces)
    assert total > 3 * len(gimp_texts)


def test_simple_danish_sentences(params):
    splitter = SentenceSplitter(params)
    text = "Vælg et lag. Klik derefter på knappen! Er du sikker? Ja."
    assert splitter.split(text) == [
        "Vælg et lag.",
        " Klik derefter på knappen!",
        " Er du sikker?",
        " Ja.",
    ]
    assert splitter.split("no full stop") == ["no full stop"]


def test_params_save_load_round_trip(params, gimp_texts, tmp_path):
    save_params(params, tmp_path / "p.json")
    loaded = load_params(tmp_path / "p.json")
    assert params_to_dict(loaded) == params_to_dict(params)
    a, b = SentenceSplitter(params), SentenceSplitter(loaded)
    assert [a.split(t) for t in gimp_texts] == [b.split(t) for t in gimp_texts]


def test_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"abbrev_types": []}')
    with pytest.raises(ValueError, match="not a punkt parameter file"):
        load_params(tmp_path / "x.json")
