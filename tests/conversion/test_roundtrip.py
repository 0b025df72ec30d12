"""HF -> Megatron -> HF returns bitwise-identical tensors and a loadable HF directory."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from megatron_lang.checkpointing.metadata import load_metadata
from megatron_lang.conversion import megatron_to_hf
from tests.conversion._tiny import input_ids


@pytest.mark.unit
@pytest.mark.parametrize("name", ["llama2", "llama3", "smollm2", "mistral01", "nemo", "qwen2"])
def test_roundtrip_bitwise(tiny_cases, tmp_path, name):
    from transformers import AutoModelForCausalLM

    case = tiny_cases[name]
    out = tmp_path / "hf"
    megatron_to_hf(case.ckpt_dir, out)
    before = load_file(case.hf_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert sorted(after) == sorted(before)
    for k in before:
        assert after[k].dtype == before[k].dtype, k
        assert torch.equal(after[k], before[k]), k
    assert (out / "generation_config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == 1000
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids()).logits, case.logits)


@pytest.mark.unit
def test_checkpoint_metadata_and_padding(tiny_cases):
    meta = load_metadata(tiny_cases["nemo"].ckpt_dir)
    assert meta.padded_vocab_size == 1024  # 1000 padded to a multiple of 128 x TP 2
    assert meta.arch.family == "mistral"
    assert meta.arch.kv_channels == 32 and meta.arch.head_dim == 32
    assert meta.hf_config["model_type"] == "mistral"
    assert load_metadata(tiny_cases["mistral01"].ckpt_dir).arch.sliding_window == 4
    assert load_metadata(tiny_cases["qwen2"].ckpt_dir).arch.qkv_bias is True
    rope = load_metadata(tiny_cases["llama3"].ckpt_dir).arch
    assert rope.rotary_base == 500000.0 and rope.rope_scaling["rope_type"] == "llama3"


@pytest.mark.unit
def test_tied_checkpoint_has_no_output_layer(tiny_cases):
    from torch.distributed.checkpoint import FileSystemReader

    tied = FileSystemReader(str(tiny_cases["smollm2"].ckpt_dir)).read_metadata()
    untied = FileSystemReader(str(tiny_cases["llama2"].ckpt_dir)).read_metadata()
    assert "output_layer.weight" not in tied.state_dict_metadata
    assert tuple(untied.state_dict_metadata["output_layer.weight"].size) == (1024, 64)
    stacked = untied.state_dict_metadata["decoder.layers.mlp.linear_fc1.weight"]
    assert tuple(stacked.size) == (2, 192, 64)  # [layers, gate+up, hidden]
