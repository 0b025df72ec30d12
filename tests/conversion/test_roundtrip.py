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


@pytest.mark.unit
def test_streamed_writer_matches_megatron_save(tiny_cases, tmp_path):
    """The streamed checkpoint has the layout megatron-core's own dist_checkpointing.save writes."""
    from torch.distributed.checkpoint import FileSystemReader

    from megatron_lang.conversion.megatron_io import checkpoint_key, load_tensors, save_checkpoint

    case = tiny_cases["qwen2"]
    ours = FileSystemReader(str(case.ckpt_dir)).read_metadata().state_dict_metadata
    names = {
        "embedding.word_embeddings.weight": (1024, 64),
        "decoder.final_layernorm.weight": (64,),
        **{f"decoder.layers.{i}.{n}": s for i in range(2) for n, s in [
            ("input_layernorm.weight", (64,)),
            ("self_attention.linear_qkv.weight", (192, 64)),
            ("self_attention.linear_qkv.bias", (192,)),
            ("self_attention.linear_proj.weight", (64, 64)),
            ("pre_mlp_layernorm.weight", (64,)),
            ("mlp.linear_fc1.weight", (192, 64)),
            ("mlp.linear_fc2.weight", (64, 96)),
        ]},
    }  # fmt: skip
    tensors = load_tensors(case.ckpt_dir, {n: (s, torch.float32) for n, s in names.items()}, 2)
    (tmp_path / "ref").mkdir()
    save_checkpoint(tensors, tmp_path / "ref", 2)
    ref = FileSystemReader(str(tmp_path / "ref")).read_metadata().state_dict_metadata
    assert sorted(ours) == sorted(ref) == sorted({checkpoint_key(n)[0] for n in names})
    for key in ref:
        assert ours[key].size == ref[key].size, key
        assert ours[key].properties.dtype == ref[key].properties.dtype, key
        assert sorted(c.offsets for c in ours[key].chunks) == sorted(
            c.offsets for c in ref[key].chunks
        )
    back = load_tensors(tmp_path / "ref", {n: (s, torch.float32) for n, s in names.items()}, 2)
    assert all(torch.equal(back[n], tensors[n]) for n in names)
    config = json.loads((tmp_path / "ref" / "metadata.json").read_text())
    assert json.loads((case.ckpt_dir / "metadata.json").read_text()) == config


@pytest.mark.unit
def test_pytorch_bin_input(tiny_cases, tmp_path):
    """A ``pytorch_model.bin`` directory converts to the same weights as the safetensors one."""
    import shutil

    from megatron_lang.conversion import hf_to_megatron

    case = tiny_cases["llama3"]
    (tmp_path / "bin").mkdir()
    shutil.copy(case.hf_dir / "config.json", tmp_path / "bin")
    torch.save(load_file(case.hf_dir / "model.safetensors"), tmp_path / "bin" / "pytorch_model.bin")
    hf_to_megatron(tmp_path / "bin", tmp_path / "ckpt")
    megatron_to_hf(tmp_path / "ckpt", tmp_path / "out")
    before = load_file(case.hf_dir / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
