"""Fixtures of the adaptation tests: real Danish text and real tokenizers built from it.

Tokenizer fixtures (fertility / training / extension tests):

* ``danish_corpus``: the GIMP manual in Danish, split by page into ``train``
  (4 of every 5 pages) and ``heldout`` (every 5th page) JSONL files.
* ``english_corpus``: 150 English pages of the same manual.
* ``danish_bpe_tokenizer_dir``: byte-level BPE (8k) trained on ``danish_corpus.train``.
* ``smollm2_extended_tokenizer_dir``: SmolLM2's tokenizer extended with it
  (``<mask>`` appended); ids ``0..49151`` are SmolLM2's.
* ``mistral_sp_model``: Mistral-7B v0.1's ``tokenizer.model.v1`` from the installed
  ``mistral_common`` package (never copied into the repository).
* ``danish_sp_tokenizer_dir`` / ``mistral_extended_sp_dir``: SentencePiece BPE (8k)
  trained on the Danish pages and Mistral-7B extended with it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus

TOKENIZER_VOCAB = 8000


@dataclass(frozen=True)
class DanishCorpus:
    """JSONL files of Danish GIMP pages: training and held-out pages."""

    train: Path
    heldout: Path


def mistral_data_file(name: str) -> Path:
    """A file of the installed ``mistral_common`` package's ``data`` folder."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("mistral_common is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing from mistral_common")
    return path


@pytest.fixture(scope="session")
def danish_corpus(tmp_path_factory) -> DanishCorpus:
    """All Danish GIMP pages; every 5th page is held out (not used for training)."""
    if not (GIMP_HELP_ROOT / "da").is_dir():
        pytest.fail(f"{GIMP_HELP_ROOT / 'da'} missing: apt-get install gimp-help-da")
    root = tmp_path_factory.mktemp("danish_corpus")
    build_html_corpus(root / "all.jsonl", ["da"])
    lines = (root / "all.jsonl").read_text(encoding="utf-8").splitlines()
    train = [x for i, x in enumerate(lines) if i % 5]
    heldout = [x for i, x in enumerate(lines) if not i % 5]
    (root / "train.jsonl").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "heldout.jsonl").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    return DanishCorpus(root / "train.jsonl", root / "heldout.jsonl")


@pytest.fixture(scope="session")
def english_corpus(tmp_path_factory) -> Path:
    """150 English GIMP pages as JSONL."""
    path = tmp_path_factory.mktemp("english_corpus") / "en.jsonl"
    build_html_corpus(path, ["en"], max_docs_per_language=150)
    return path


def read_jsonl_texts(path: Path) -> list[str]:
    """The ``text`` of every line of a JSONL file."""
    return [json.loads(x)["text"] for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def danish_bpe_tokenizer_dir(danish_corpus, tmp_path_factory) -> Path:
    """A byte-level BPE (8k) trained on the Danish training pages."""
    from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "da_bpe"
    train_tokenizer(TrainConfig([str(danish_corpus.train)], str(out), "bpe", TOKENIZER_VOCAB))
    return out


@pytest.fixture(scope="session")
def smollm2_extended_tokenizer_dir(
    smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, tmp_path_factory
) -> Path:
    """SmolLM2's tokenizer extended with the Danish BPE (plus ``<mask>``); HF folder."""
    from megatron_lang.adaptation.vocab_extend import extend_tokenizer

    out = tmp_path_factory.mktemp("tok") / "smollm2_da"
    extend_tokenizer(smollm2_tokenizer_dir, danish_bpe_tokenizer_dir, out, mask_token="<mask>")
    return out


@pytest.fixture(scope="session")
def mistral_sp_model() -> Path:
    """Mistral-7B v0.1's SentencePiece model inside the installed mistral_common."""
    return mistral_data_file("tokenizer.model.v1")


@pytest.fixture(scope="session")
def danish_sp_tokenizer_dir(danish_corpus, tmp_path_factory) -> Path:
    """A SentencePiece BPE (8k, byte fallback) trained on the Danish training pages."""
    from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "da_sp"
    config = TrainConfig([str(danish_corpus.train)], str(out), "sentencepiece", TOKENIZER_VOCAB)
    train_tokenizer(config)
    return out


@pytest.fixture(scope="session")
def mistral_extended_sp_dir(mistral_sp_model, danish_sp_tokenizer_dir, tmp_path_factory) -> Path:
    """Mistral-7B's SentencePiece model extended with the Danish one (``tokenizer.model``)."""
    from megatron_lang.adaptation.vocab_extend import extend_tokenizer

    out = tmp_path_factory.mktemp("tok") / "mistral_da"
    extend_tokenizer(mistral_sp_model, danish_sp_tokenizer_dir, out)
    return out
