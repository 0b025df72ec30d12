"""Tokenizers for the chat templates: SmolLM2's own (ChatML), Mistral-7B's SentencePiece
model (for the llama2 and mistral formats), SmolLM2 with Llama-3's header tokens added."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mistral_hf_dir(tmp_path_factory) -> Path:
    """Mistral-7B v0.1's tokenizer (inside mistral_common) as an HF folder, BOS <s>, EOS </s>."""
    from megatron_lang.adaptation.tokenizer_files import (
        load_sp_proto,
        sentencepiece_to_tokenizers,
        write_hf_files,
    )
    from tests.adaptation.conftest import mistral_data_file

    out = tmp_path_factory.mktemp("mistral_hf")
    tok = sentencepiece_to_tokenizers(load_sp_proto(mistral_data_file("tokenizer.model.v1")))
    write_hf_files(out, tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return out


@pytest.fixture(scope="session")
def llama3_tokens_dir(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer with Llama-3's four chat special tokens added, no own template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ]
        }
    )
    tok.chat_template = None
    out = tmp_path_factory.mktemp("llama3_tokens")
    tok.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out
