"""Error cases name the tensor and the shapes, and leave no output that looks valid."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_lang.conversion import ConversionError, hf_to_megatron, megatron_to_hf


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_weights(hf_dir, fn):
    path = hf_dir / "model.safetensors"
    sd = load_file(path)
    fn(sd)
    save_file(sd, path, metadata={"format": "pt"})


def _assert_no_output(parent, name="out"):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}")], list(
        parent.iterdir()
    )


@pytest.mark.unit
def test_missing_tensor(tiny_cases, tmp_path):
    hf = _copy(tiny_cases["llama2"].hf_dir, tmp_path / "hf")
    _edit_weights(hf, lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(
        ConversionError,
        match=r"missing tensor 'model.layers.1.mlp.up_proj.weight' \(expected shape \(96, 64\)\)",
    ):
        hf_to_megatron(hf, tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_unknown_tensor(tiny_cases, tmp_path):
    hf = _copy(tiny_cases["llama2"].hf_dir, tmp_path / "hf")
    _edit_weights(hf, lambda sd: sd.update({"model.layers.0.mlp.extra.weight": torch.zeros(3)}))
    with pytest.raises(ConversionError, match="unknown tensor 'model.layers.0.mlp.extra.weight'"):
        hf_to_megatron(hf, tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_shape_mismatch_with_config(tiny_cases, tmp_path):
    hf = _copy(tiny_cases["llama2"].hf_dir, tmp_path / "hf")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ConversionError,
        match=r"tensor 'model.layers.0.mlp.gate_proj.weight': expected shape \(128, 64\) "
        r"for llama config, found \(96, 64\)",
    ):
        hf_to_megatron(hf, tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_failure_while_saving_leaves_no_output(tiny_cases, tmp_path, monkeypatch):
    import megatron_lang.conversion.convert as convert

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(convert, "save_checkpoint_streamed", boom)
    with pytest.raises(OSError, match="disk full"):
        hf_to_megatron(tiny_cases["llama2"].hf_dir, tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_unsupported_architecture_dir(tmp_path):
    from transformers import GPT2Config

    GPT2Config(architectures=["GPT2LMHeadModel"], n_layer=1).save_pretrained(tmp_path / "gpt2")
    save_file({"x": torch.zeros(1)}, tmp_path / "gpt2" / "model.safetensors")
    with pytest.raises(ConversionError, match="unsupported architecture 'GPT2LMHeadModel'"):
        hf_to_megatron(tmp_path / "gpt2", tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_existing_output_is_not_overwritten(tiny_cases, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        hf_to_megatron(tiny_cases["llama2"].hf_dir, tmp_path / "out")


@pytest.mark.unit
def test_export_checks_checkpoint_shapes(tiny_cases, tmp_path):
    ckpt = _copy(tiny_cases["llama2"].ckpt_dir, tmp_path / "ckpt")
    meta_path = ckpt / "megatron_lang.json"
    meta = json.loads(meta_path.read_text())
    meta["arch"]["ffn_hidden_size"] = 128  # metadata no longer matches the weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        ConversionError,
        match=r"tensor 'decoder.layers.mlp.linear_fc1.weight': expected global shape "
        r"\(2, 256, 64\), found \(2, 192, 64\)",
    ):
        megatron_to_hf(ckpt, tmp_path / "out")
    _assert_no_output(tmp_path)


@pytest.mark.unit
def test_export_of_a_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="megatron_lang.json is missing"):
        megatron_to_hf(tmp_path, tmp_path / "out")
