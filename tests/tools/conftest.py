"""CLI tests reuse the corpus and tokenizer fixtures of the data tests."""

from tests.data.conftest import bpe_tokenizer, gimp_jsonl, gimp_texts, sp_model  # noqa: F401
