"""Checkpoint metadata: save/load round trip, tokenizer files, clear errors."""

from __future__ import annotations

import json

import pytest

from megatron_lang.checkpointing.metadata import (
    CheckpointMetadata,
    load_metadata,
    save_metadata,
    tokenizer_path,
)
from megatron_lang.models.arch import tiny_llama


@pytest.mark.unit
def test_roundtrip_with_tokenizer(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    (tok / "unrelated.bin").write_text("x")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    meta = CheckpointMetadata(
        tiny_llama(), padded_vocab_size=128, dtype="bfloat16", hf_config={"model_type": "llama"}
    )
    save_metadata(ckpt, meta, str(tok))
    back = load_metadata(ckpt)
    assert back == meta and back.family == "llama"
    assert sorted(p.name for p in tokenizer_path(ckpt).iterdir()) == ["tokenizer.json"]


@pytest.mark.unit
def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="megatron_lang.json is missing"):
        load_metadata(tmp_path)
    d = CheckpointMetadata(tiny_llama(), 128).to_dict()
    (tmp_path / "megatron_lang.json").write_text(json.dumps({**d, "bogus": 1}))
    with pytest.raises(ValueError, match=r"unknown checkpoint metadata keys: \['bogus'\]"):
        load_metadata(tmp_path)
    (tmp_path / "megatron_lang.json").write_text(json.dumps({**d, "format_version": 99}))
    with pytest.raises(ValueError, match="newer than this code"):
        load_metadata(tmp_path)
