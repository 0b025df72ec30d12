"""Held-out data for perplexity evaluation: texts or Megatron indexed datasets -> documents.

Words are counted with the whitespace counter of the fertility tool
(:func:`megatron_lang.adaptation.fertility.count_words`, ``len(text.split())``), so
fertility and per-word perplexity figures use the same word count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_lang.adaptation.fertility import count_words as _fertility_words
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

CANONICAL_CHECK_DOCS = 4
"""Documents of an indexed dataset whose ids are checked against the tokenizer."""


class EvaluationError(ValueError):
    """Bad input to an evaluation (the message names the file, model or value)."""


def count_words(text: str) -> int:
    """Whitespace-separated words (``len(text.split())``), the same counter for every model.

    It is the ``whitespace`` count of the fertility tool.
    """
    return _fertility_words(text)[0]


@dataclass
class Document:
    """A document ready to score: its token ids (no special tokens) and its text counts."""

    ids: list[int]
    words: int
    characters: int
    bytes: int


def documents_from_texts(tokenizer: Any, texts: Sequence[str], batch: int = 256) -> list[Document]:
    """Tokenize texts (no special tokens) and count their words, characters and bytes."""
    docs: list[Document] = []
    for i in range(0, len(texts), batch):
        part = list(texts[i : i + batch])
        enc = tokenizer(part, add_special_tokens=False)["input_ids"]
        for text, ids in zip(part, enc):
            docs.append(
                Document(list(ids), count_words(text), len(text), len(text.encode("utf-8")))
            )
    return docs


def documents_from_indexed(
    tokenizer: Any, prefix: str | os.PathLike, vocab_size: int, allow_noncanonical: bool = False
) -> list[Document]:
    """Documents of a Megatron ``.bin``/``.idx`` dataset, scored as stored.

    A leading BOS and a trailing EOS/EOD id are removed; words and bytes are counted
    on the decoded text.

    Args:
        tokenizer: the tokenizer that made the dataset.
        prefix: dataset prefix (``.../name_text_document``).
        vocab_size: the model's vocabulary size (every id must be below it).
        allow_noncanonical: accept ids that differ from what ``tokenizer`` makes of
            their decoded text (e.g. a deliberately re-tokenised dataset).

    Raises:
        EvaluationError: ids outside the vocabulary, or (unless allowed) the first
            documents' ids are not the tokenizer's encoding of their text.
    """
    from megatron_lang.data.indexed import IndexedDatasetReader

    reader = IndexedDatasetReader(prefix)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    docs: list[Document] = []
    for d in range(reader.num_documents):
        ids = reader.document(d).astype("int64").tolist()
        if ids and bos is not None and ids[0] == bos:
            ids = ids[1:]
        if ids and eos is not None and ids[-1] == eos:
            ids = ids[:-1]
        if ids and max(ids) >= vocab_size:
            raise EvaluationError(
                f"{prefix}: document {d} has token id {max(ids)} >= the model's vocabulary "
                f"size {vocab_size}; the dataset was made with another tokenizer"
            )
        text = tokenizer.decode(ids)
        if d < CANONICAL_CHECK_DOCS and not allow_noncanonical:
            again = tokenizer(text, add_special_tokens=False)["input_ids"]
            if list(again) != ids:
                raise EvaluationError(
                    f"{prefix}: the ids of document {d} are not what the tokenizer "
                    f"({getattr(tokenizer, 'name_or_path', '?')}) makes of their text; was the "
                    "dataset made with another tokenizer? (allow_noncanonical accepts it)"
                )
        docs.append(Document(ids, count_words(text), len(text), len(text.encode("utf-8"))))
    return docs


def is_indexed_prefix(path: str | os.PathLike) -> Path | None:
    """The dataset prefix when ``path`` is a ``.bin``/``.idx`` file or names a prefix of both."""
    p = Path(path)
    if p.suffix in (".bin", ".idx"):
        p = p.with_suffix("")
    if p.with_name(p.name + ".bin").is_file() and p.with_name(p.name + ".idx").is_file():
        return p
    return None


def read_texts(path: str | os.PathLike) -> list[str]:
    """Texts of a JSONL file (``text`` key; also ``.jsonl.gz``/``.zst``), ``.txt`` file or folder.

    Bad or empty documents are skipped with a warning.

    Raises:
        EvaluationError: the path does not exist, is unsupported, or holds no documents.
    """
    from megatron_lang.data.readers import DocError, InputError, iter_records

    errors: list[DocError] = []
    try:
        texts = [r.doc["text"] for r in iter_records([path], ["text"], errors=errors)]
    except InputError as err:
        raise EvaluationError(f"data {path}: {err}") from err
    if errors:
        log.warning("%s: skipped %d bad documents (first: %s)", path, len(errors), errors[0])
    if not texts:
        raise EvaluationError(f"data {path} has no documents")
    return texts


@dataclass
class DataSpec:
    """A held-out set: a language label and a JSONL/text path or an indexed-dataset prefix."""

    language: str
    path: Path
    texts: list[str] | None = None
    """Loaded texts (None for an indexed dataset)."""
    indexed: Path | None = None
    """Indexed dataset prefix (None for texts)."""


def load_data(language: str, path: str | os.PathLike) -> DataSpec:
    """Check and load one data set (texts are read now; indexed data is checked now).

    Raises:
        EvaluationError: missing, unsupported or empty data.
    """
    from megatron_lang.data.indexed import read_index

    prefix = is_indexed_prefix(path)
    if prefix is not None:
        try:
            index = read_index(prefix)
        except Exception as err:
            raise EvaluationError(f"data {path}: {err}") from err
        if index.document_count <= 1:
            raise EvaluationError(f"data {path} has no documents")
        return DataSpec(language, Path(path), indexed=prefix)
    return DataSpec(language, Path(path), texts=read_texts(path))
