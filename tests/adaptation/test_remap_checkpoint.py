"""remap_checkpoint_vocab and the CLIs: a tiny HF Llama converted at TP-padding 2, then remapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from megatron_lang.adaptation.embedding_init import mean_init
from megatron_lang.adaptation.focus import FocusInit, FocusOptions
from megatron_lang.adaptation.remap_checkpoint import remap_checkpoint_vocab
from megatron_lang.checkpointing.metadata import load_metadata
from megatron_lang.conversion import ConversionError, hf_to_megatron
from megatron_lang.conversion.convert import megatron_shape
from megatron_lang.conversion.families import FAMILIES
from megatron_lang.conversion.mapping import expand
from megatron_lang.conversion.megatron_io import load_tensors
from megatron_lang.conversion.vocab import DEFAULT_OUTPUT_SHRINK, shrink_toward_mean
from tests.adaptation import _toy
from tests.conversion._tiny import COMMON

NEW_TOKENS = ["hyggeligt", "smørrebrød", "københavn hus"]


def _all_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    meta = load_metadata(ckpt)
    convs = expand(FAMILIES[meta.arch.family].rules, meta.arch)
    specs = {c.megatron: (megatron_shape(c, meta.padded_vocab_size), torch.float32) for c in convs}
    return load_tensors(ckpt, specs, meta.arch.num_layers)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tied and untied tiny Llamas over a byte-level BPE, converted with tp_for_padding=2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from megatron_lang.data.demo import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("remap")
    tok_dir = train_bpe_tokenizer(_toy.danish_lines(400), root / "tok", vocab_size=300)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    new = AutoTokenizer.from_pretrained(tok_dir)
    assert new.add_tokens(NEW_TOKENS) == len(NEW_TOKENS)
    new.save_pretrained(root / "newtok")
    out = {"root": root, "old_tok": tok, "newtok": root / "newtok"}
    for tied in (True, False):
        cfg = LlamaConfig(**{**COMMON, "vocab_size": len(tok)}, tie_word_embeddings=tied)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.config.architectures = ["LlamaForCausalLM"]
        hf = root / f"hf-{tied}"
        model.save_pretrained(hf)
        tok.save_pretrained(hf)
        ckpt = root / f"ckpt-{tied}"
        hf_to_megatron(hf, ckpt, tp_for_padding=2)
        out[tied] = (hf, ckpt)
    return out


@pytest.mark.unit
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_remap_checkpoint_matches_direct_conversion(tiny, tmp_path, tied):
    hf, ckpt = tiny[tied]
    out = tmp_path / "remapped"
    report = remap_checkpoint_vocab(ckpt, out, tiny["newtok"], "mean", tp_for_padding=2)
    old_v = len(tiny["old_tok"])
    new_v = old_v + len(NEW_TOKENS)
    assert (report.new_tokens, report.dropped_tokens, report.new_vocab_size) == (3, 0, new_v)
    meta = load_metadata(out)
    assert meta.arch.vocab_size == new_v == meta.hf_config["vocab_size"]
    assert meta.padded_vocab_size == 512  # multiple of 128 x 2 above 303
    change = meta.extra["vocab_change"]
    assert (change["old_vocab_size"], change["new_tokens"], change["kept_tokens"]) == (
        old_v,
        3,
        old_v,
    )
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert len(json.loads((out / "tokenizer" / "tokenizer.json").read_text())["added_tokens"]) == 4
    before, after = _all_tensors(ckpt), _all_tensors(out)
    assert set(after) == set(before)
    vocab_names = ["embedding.word_embeddings.weight"] + ([] if tied else ["output_layer.weight"])
    assert ("output_layer.weight" in after) is not tied
    hf_names = {"embedding.word_embeddings.weight": "model.embed_tokens.weight"}
    hf_names["output_layer.weight"] = "lm_head.weight"
    new_tok = tiny["old_tok"].from_pretrained(tiny["newtok"])
    for name in before:
        if name not in vocab_names:
            assert torch.equal(before[name], after[name]), name
            continue
        old_VH, new_VH = before[name], after[name]
        assert torch.equal(new_VH[:old_v], old_VH[:old_v])  # old tokens: bitwise
        assert not new_VH[new_v:].any()  # padding rows zero
        _, ctx = _toy.context(tiny["old_tok"], new_tok, old_VH[:old_v], hf_names[name])
        expected = mean_init(ctx)
        if tied or name == "output_layer.weight":  # rows that make logits: pulled to the mean
            expected = shrink_toward_mean(expected, old_VH[:old_v], DEFAULT_OUTPUT_SHRINK)
        assert torch.equal(new_VH[old_v:new_v], expected)
    if not tied:  # each matrix from its own rows
        assert not torch.equal(
            after["embedding.word_embeddings.weight"][old_v:new_v],
            after["output_layer.weight"][old_v:new_v],
        )
    direct = tmp_path / "direct"
    hf_to_megatron(hf, direct, new_tokenizer=tiny["newtok"], tp_for_padding=2)
    assert load_metadata(direct).padded_vocab_size == meta.padded_vocab_size
    for name, t in _all_tensors(direct).items():
        assert torch.equal(t, after[name]), name


@pytest.mark.unit
def test_training_root_with_latest_and_repadding(tiny, tmp_path):
    _, ckpt = tiny[False]
    root = tmp_path / "run"
    shutil.copytree(ckpt, root / "iter_0000005")
    (root / "iter_0000005" / "train_state.json").write_text('{"step": 5}')
    (root / "latest").write_text("iter_0000005\n")
    out = tmp_path / "out"
    report = remap_checkpoint_vocab(root, out, tiny["newtok"], "random", tp_for_padding=8)
    assert report.source == root / "iter_0000005"
    meta = load_metadata(out)
    assert meta.padded_vocab_size == 1024 and meta.extra["tp_for_padding"] == 8
    assert not (out / "train_state.json").exists()  # weights only
    t = _all_tensors(out)["output_layer.weight"]
    assert t.shape[0] == 1024 and not t[meta.arch.vocab_size :].any()


@pytest.mark.unit
def test_bad_input_clear_error_and_no_output(tiny, tmp_path):
    from transformers import AutoTokenizer

    from megatron_lang.data.demo import train_bpe_tokenizer

    _, ckpt = tiny[True]
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        remap_checkpoint_vocab(tmp_path / "nope", out, tiny["newtok"])
    with pytest.raises(FileNotFoundError, match="megatron_lang.json is missing"):
        remap_checkpoint_vocab(tmp_path, out, tiny["newtok"])
    with pytest.raises(ConversionError, match="new tokenizer .* is not a folder"):
        remap_checkpoint_vocab(ckpt, out, tmp_path / "no-tok")
    other = train_bpe_tokenizer(["helt andre ord her"] * 50, tmp_path / "other", vocab_size=280)
    assert len(AutoTokenizer.from_pretrained(other)) < len(tiny["old_tok"]) + 3
    with pytest.raises(ConversionError, match="lacks .* token\\(s\\) of the old vocabulary"):
        remap_checkpoint_vocab(ckpt, out, other, require_superset=True)
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    meta = json.loads((broken / "megatron_lang.json").read_text())
    meta["arch"]["num_layers"] = 3
    (broken / "megatron_lang.json").write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="has shape .* expected"):
        remap_checkpoint_vocab(broken, out, tiny["newtok"])
    with pytest.raises(ValueError, match="needs a target-language corpus"):
        remap_checkpoint_vocab(ckpt, out, tiny["newtok"], "focus")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.incomplete")]
    remap_checkpoint_vocab(ckpt, out, tiny["newtok"])
    with pytest.raises(FileExistsError):
        remap_checkpoint_vocab(ckpt, out, tiny["newtok"])


@pytest.mark.unit
def test_cli_focus_and_remap_vocab(tiny, tmp_path, capsys):
    from tools.convert_hf import hf_to_megatron as cli
    from tools.convert_hf import remap_vocab

    hf, ckpt = tiny[False]
    corpus = _toy.write_jsonl(tmp_path / "da.jsonl", _toy.danish_lines(600, seed=1))
    out = tmp_path / "focus"
    args = ["--hf", str(hf), "--out", str(out), "--new-tokenizer", str(tiny["newtok"])]
    focus = ["--embed-init", "focus", "--focus-corpus", str(corpus), "--focus-min-count", "1"]
    assert cli.main(args + focus) == 0
    meta = load_metadata(out)
    assert meta.extra["vocab_change"]["embed_init"] == "focus"
    old_v = len(tiny["old_tok"])
    new_tok = tiny["old_tok"].from_pretrained(tiny["newtok"])
    before, after = _all_tensors(ckpt), _all_tensors(out)
    init = FocusInit(FocusOptions(corpus=[corpus], min_count=1))
    for name, hf_name in (("embedding.word_embeddings.weight", "model.embed_tokens.weight"),
                          ("output_layer.weight", "lm_head.weight")):  # fmt: skip
        assert torch.equal(after[name][:old_v], before[name][:old_v])
        _, ctx = _toy.context(tiny["old_tok"], new_tok, before[name][:old_v], hf_name)
        expected = init(ctx)
        if name == "output_layer.weight":
            expected = shrink_toward_mean(expected, before[name][:old_v], DEFAULT_OUTPUT_SHRINK)
        assert torch.equal(after[name][old_v : old_v + 3], expected)
    w = init.weights(ctx)
    assert all(s is not None for s in w.support)  # the new words occur in the corpus
    # the same through remap_vocab.py on the converted checkpoint
    out2 = tmp_path / "focus2"
    rargs = ["--ckpt", str(ckpt), "--out", str(out2), "--new-tokenizer", str(tiny["newtok"])]
    assert remap_vocab.main(rargs + focus + ["--tp-for-padding", "1"]) == 0
    assert "3 new" in capsys.readouterr().out
    for name, t in _all_tensors(out2).items():
        assert torch.equal(t, after[name]), name
    opts = load_metadata(out2).extra["vocab_change"]["embed_init_options"]
    assert opts["min_count"] == 1 and opts["corpus"] == [str(corpus)]
    assert cli.main(args[:4] + ["--embed-init", "focus"]) == 2
    assert "--new-tokenizer" in capsys.readouterr().err
    assert (
        cli.main(args[:2] + ["--out", str(tmp_path / "x")] + args[4:] + ["--embed-init", "focus"])
        == 2
    )
    assert "--focus-corpus" in capsys.readouterr().err
    assert remap_vocab.main(["--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "y"),
                             "--new-tokenizer", str(tiny["newtok"])]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        remap_vocab.main(["--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out
