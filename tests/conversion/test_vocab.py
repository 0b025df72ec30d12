"""Changed vocabulary: old tokens keep their rows, new tokens get the init function's rows."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.checkpointing.metadata import load_metadata
from megatron_lang.conversion import hf_to_megatron, megatron_to_hf
from megatron_lang.conversion.vocab import DEFAULT_OUTPUT_SHRINK

NEW_TOKENS = ["hyggeligt", "smørrebrød", "Københavns"]


@pytest.fixture(scope="module")
def tiny_with_tokenizer(smollm2_tokenizer_dir, tmp_path_factory):
    """A tiny random Llama over SmolLM2's real tokenizer, and an extended tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    root = tmp_path_factory.mktemp("vocab")
    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    assert tok.add_tokens(NEW_TOKENS) == len(NEW_TOKENS)
    tok.save_pretrained(root / "newtok")
    return root, AutoTokenizer.from_pretrained(smollm2_tokenizer_dir), tok


@pytest.mark.unit
@pytest.mark.parametrize("init", ["mean", "random"])
def test_new_tokenizer_remaps_rows(tiny_with_tokenizer, tmp_path, init):
    from safetensors.torch import load_file

    root, old_tok, new_tok = tiny_with_tokenizer
    ckpt = tmp_path / "ckpt"
    hf_to_megatron(root / "hf", ckpt, new_tokenizer=root / "newtok", embed_init=init)
    meta = load_metadata(ckpt)
    old_v = len(old_tok)
    assert meta.arch.vocab_size == old_v + len(NEW_TOKENS) == len(new_tok)
    assert meta.padded_vocab_size % 128 == 0 and meta.padded_vocab_size >= meta.arch.vocab_size
    assert meta.extra["vocab_change"]["new_tokens"] == len(NEW_TOKENS)
    assert (ckpt / "tokenizer" / "tokenizer.json").is_file()
    megatron_to_hf(ckpt, tmp_path / "out")
    before = load_file(root / "hf" / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = before[name], after[name]
        assert new.shape == (old_v + len(NEW_TOKENS), old.shape[1])
        assert torch.equal(new[:old_v], old)  # old tokens keep their rows
        new_rows = new[old_v:]
        if init == "mean":
            for i, tok in enumerate(NEW_TOKENS):
                ids = old_tok.encode(tok, add_special_tokens=False)
                assert len(ids) > 1
                expected = old[ids].mean(dim=0)
                if name == "lm_head.weight":  # logit rows are pulled toward the mean row
                    mean = old.mean(dim=0)
                    expected = mean + DEFAULT_OUTPUT_SHRINK * (expected - mean)
                torch.testing.assert_close(new_rows[i], expected)
        else:
            assert not any(torch.allclose(r, old.mean(dim=0)) for r in new_rows)
            assert 0.5 < new_rows.std() / old.std() < 2.0
    for name in before:
        if name not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(before[name], after[name]), name


@pytest.mark.unit
def test_custom_init_callable(tiny_with_tokenizer, tmp_path):
    root, _, _ = tiny_with_tokenizer
    seen = []

    def init(ctx):
        seen.append((ctx.tensor_name, list(ctx.new_tokens)))
        return torch.full((len(ctx.new_ids), ctx.old_weight.shape[1]), 7.0)

    hf_to_megatron(root / "hf", tmp_path / "ckpt", new_tokenizer=root / "newtok", embed_init=init)
    assert seen == [("model.embed_tokens.weight", NEW_TOKENS), ("lm_head.weight", NEW_TOKENS)]
