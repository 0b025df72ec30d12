"""Session fixtures used by tests in several folders, defined once.

Loaded as a pytest plugin by ``tests/conftest.py``. A session fixture imported into
several conftests or test modules is registered once per place and built once per
place; defined here it is built once per session.

* ``gimp_jsonl`` / ``gimp_texts``: 25 pages each of the Danish, Nynorsk and English GIMP
  manual (Debian ``gimp-help-*``, installed by ``make install``), built at test time.
* ``sp_model`` / ``bpe_tokenizer``: SentencePiece and byte-level BPE tokenizers trained
  on them here.
* ``smollm2_fp32_dir``: SmolLM2-135M de-quantised from the GGUF to fp32 safetensors
  (cached under ``.cache/test-artefacts/``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS_PER_LANGUAGE = 25


@pytest.fixture(scope="session")
def gimp_jsonl(tmp_path_factory) -> Path:
    """JSONL with 25 pages each of the Danish, Nynorsk and English GIMP manual."""
    from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus

    for lang in ("da", "nn", "en"):
        if not (GIMP_HELP_ROOT / lang).is_dir():
            pytest.fail(f"{GIMP_HELP_ROOT / lang} missing: apt-get install gimp-help-{lang}")
    path = tmp_path_factory.mktemp("corpus") / "gimp.jsonl"
    build_html_corpus(path, ["da", "nn", "en"], max_docs_per_language=DOCS_PER_LANGUAGE)
    return path


@pytest.fixture(scope="session")
def gimp_texts(gimp_jsonl: Path) -> list[str]:
    """The documents of :func:`gimp_jsonl`, in order."""
    return [json.loads(line)["text"] for line in gimp_jsonl.read_text().splitlines()]


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory, gimp_texts: list[str]) -> Path:
    """A small SentencePiece BPE model (byte fallback, identity normalisation) trained here.

    Identity normalisation and ``remove_extra_whitespaces=False`` keep every character, so
    decoding the ids gives the input text back exactly.
    """
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("sp")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for t in gimp_texts for line in t.split("\n") if line]),
        model_prefix=str(out / "sp"),
        model_type="bpe",
        vocab_size=1200,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return out / "sp.model"


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory, gimp_texts: list[str]) -> Path:
    """A byte-level BPE ``tokenizer.json`` (HF ``tokenizers``) that gigatoken accepts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=["<|endoftext|>", "<|begin_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(gimp_texts, trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def smollm2_fp32_dir() -> Path:
    """SmolLM2-135M de-quantised from the GGUF to an fp32 safetensors HF directory.

    transformers 5.x refuses ``save_pretrained`` on a GGUF-loaded model (it counts
    as quantized), so the tensors, config and tokenizer are written directly.
    """
    from tests.conftest import _cached_dir, smollm2_gguf_path

    def build(tmp: Path) -> None:
        from megatron_lang.conversion.hf_io import gguf_to_hf_dir

        made = gguf_to_hf_dir(smollm2_gguf_path(), tmp / "hf")
        for f in made.iterdir():
            f.rename(tmp / f.name)
        made.rmdir()

    return _cached_dir("smollm2-hf-fp32-conversion", build)
