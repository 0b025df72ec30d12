"""The real SmolLM2-135M: HF -> Megatron -> HF with matching logits and identical greedy text."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tools.convert_hf import hf_to_megatron as hf_to_megatron_cli
from tools.convert_hf import megatron_to_hf as megatron_to_hf_cli

PROMPT = "The capital of Denmark is"


@pytest.fixture(scope="module")
def smollm2_converted(smollm2_fp32_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2")
    ckpt, out = root / "ckpt", root / "hf"
    # --verify returns 1 when HF and Megatron logits differ by more than the tolerance
    verify = ["--verify", "--tolerance", "1e-4"]
    assert (
        hf_to_megatron_cli.main(["--hf", str(smollm2_fp32_dir), "--out", str(ckpt), *verify]) == 0
    )
    assert megatron_to_hf_cli.main(["--ckpt", str(ckpt), "--out", str(out), *verify]) == 0
    return ckpt, out


def _weights(d):
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


@pytest.mark.unit
@pytest.mark.slow
def test_smollm2_roundtrip_generates_same_text(smollm2_fp32_dir, smollm2_converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, out = smollm2_converted
    before, after = _weights(smollm2_fp32_dir), _weights(out)
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    tok = AutoTokenizer.from_pretrained(out)  # tokenizer files travelled with the checkpoint
    ids = tok(PROMPT, return_tensors="pt").input_ids
    texts = []
    for d in (smollm2_fp32_dir, out):
        model = AutoModelForCausalLM.from_pretrained(d).eval()
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=6, do_sample=False)
        texts.append(tok.decode(gen[0]))
    assert texts[0] == texts[1]
    assert len(texts[0]) > len(PROMPT)


@pytest.mark.unit
@pytest.mark.slow
def test_smollm2_from_gguf_matches_hf_dir_conversion(
    smollm2_gguf, smollm2_fp32_dir, smollm2_converted, tmp_path
):
    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion import hf_to_megatron, megatron_to_hf

    ckpt_dir, _ = smollm2_converted
    hf_to_megatron(smollm2_gguf, tmp_path / "ckpt")
    meta = load_metadata(tmp_path / "ckpt")
    assert meta.arch.tie_word_embeddings and meta.arch.num_query_groups == 3
    assert meta.arch.num_layers == 30 and meta.padded_vocab_size == 49152
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").is_file()
    megatron_to_hf(tmp_path / "ckpt", tmp_path / "hf")
    direct, via_dir = _weights(tmp_path / "hf"), _weights(smollm2_fp32_dir)
    assert sorted(direct) == sorted(via_dir)
    assert all(torch.equal(direct[k], via_dir[k]) for k in direct)
