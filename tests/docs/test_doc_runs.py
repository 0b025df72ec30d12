"""Real runs of the docs commands that no other test runs with the documented flags.

Small fixture data (GIMP-manual pages, tiny random Llamas); each test follows the
commands of its doc page with temporary paths. ``tests/docs/test_doc_commands.py``
credits these tests in its ``RUNS`` table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adaptation import _toy

pytestmark = pytest.mark.unit


def test_data_quick_start(tmp_path, bpe_tokenizer, capsys):  # noqa: F811
    """docs/data.md quick start: corpus -> dataset with workers -> validate -> inspect."""
    from tools.preprocess import (
        build_html_corpus,
        inspect_dataset,
        preprocess_data,
        validate_dataset,
    )

    corpus = tmp_path / "corpus" / "gimp.jsonl"
    argv = ["--output", str(corpus), "--languages", "da", "nn", "--max-docs", "4"]
    assert build_html_corpus.main(argv) == 0
    capsys.readouterr()
    prefix = tmp_path / "data" / "gimp"
    argv = ["--input", str(corpus), "--output-prefix", str(prefix), "--tokenizer"]
    argv += [str(bpe_tokenizer), "--append-eod", "--workers", "2", "--no-progress"]
    assert preprocess_data.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads(Path(printed["summary"]).read_text())  # data/gimp_summary.json
    assert summary["documents"] == 8 and summary["config"]["workers"] == 2
    ds = f"{prefix}_text_document"
    assert validate_dataset.main([ds, "--vocab-size", str(summary["vocab_size"])]) == 0
    assert validate_dataset.main([ds, "--vocab-size", "10"]) == 1  # docs/troubleshooting.md
    err = capsys.readouterr().err
    assert f"INVALID {ds}: {ds}.bin: token " in err and "outside [0, 10)" in err
    assert inspect_dataset.main([ds, "--tokenizer", str(bpe_tokenizer), "--decode", "0"]) == 0
    assert "--- document 0:" in capsys.readouterr().out


def test_sentencepiece_with_special_tokens(tmp_path, gimp_texts, capsys):  # noqa: F811
    """docs/tokenizer.md: train_tokenizer.py --type sentencepiece --special-tokens ..."""
    from tools.preprocess import train_tokenizer

    corpus = _toy.write_jsonl(tmp_path / "da_train.jsonl", gimp_texts[:25])
    argv = ["--input", str(corpus), "--output", str(tmp_path / "da_sp"), "--type"]
    argv += ["sentencepiece", "--vocab-size", "800", "--special-tokens"]
    assert train_tokenizer.main([*argv, "<|im_start|>", "<|im_end|>"]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 800
    vocab = json.loads((tmp_path / "da_sp" / "tokenizer.json").read_text())["added_tokens"]
    assert {"<|im_start|>", "<|im_end|>"} <= {t["content"] for t in vocab}
    assert (tmp_path / "da_sp" / "tokenizer.model").is_file()


def test_tiny_divergence_recipe(tmp_path, capsys):
    """docs/analysis.md "Try it on a tiny model", then docs/export.md's checked export."""
    from tests.conversion._tiny import make_hf_model
    from tools.analysis import divergence
    from tools.convert_hf import hf_to_megatron, megatron_to_hf

    base, mcore = tmp_path / "base", tmp_path / "base-mcore"
    make_hf_model("llama2", base)
    assert (
        hf_to_megatron.main(["--hf", str(base), "--out", str(mcore), "--tp-for-padding", "2"]) == 0
    )
    assert "padded vocab 1024" in capsys.readouterr().out  # 1000 rows -> a multiple of 256
    assert divergence.main([str(base), str(mcore), "--out", str(tmp_path / "report"),
                            "--no-progress"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "report" / "divergence.json").read_text())
    stats = report["comparisons"][0]["by_component"].values()
    assert all(s["mean_abs_diff"] == 0.0 for s in stats)
    out = tmp_path / "hf"
    argv = ["--ckpt", str(mcore), "--out", str(out), "--dtype", "float32", "--max-shard-gb"]
    argv += ["0.0005", "--verify", "--tolerance", "1e-4"]
    assert megatron_to_hf.main(argv) == 0
    assert megatron_to_hf.main(argv) == 2  # exists
    assert megatron_to_hf.main([*argv, "--overwrite"]) == 0
    assert len(list(out.glob("model-*.safetensors"))) > 1  # shards of at most 0.5 MB


def test_changed_vocabulary_convert_repad_export(tmp_path, capsys):
    """docs/embedding_init.md, docs/troubleshooting.md (re-pad) and docs/export.md."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.data.demo import train_bpe_tokenizer
    from tests.conversion._tiny import COMMON
    from tools.analysis import evaluate
    from tools.convert_hf import hf_to_megatron, megatron_to_hf, remap_vocab

    tok_dir = train_bpe_tokenizer(_toy.danish_lines(300), tmp_path / "tok", vocab_size=300)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    new = AutoTokenizer.from_pretrained(tok_dir)
    new.add_tokens(["hyggeligt", "smørrebrød"])
    new.save_pretrained(tmp_path / "newtok")
    torch.manual_seed(0)
    cfg = LlamaConfig(**{**COMMON, "vocab_size": len(tok)}, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.config.architectures = ["LlamaForCausalLM"]
    hf = tmp_path / "hf"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)

    ckpt = tmp_path / "ckpt-da"
    argv = ["--hf", str(hf), "--out", str(ckpt), "--new-tokenizer", str(tmp_path / "newtok")]
    assert hf_to_megatron.main([*argv, "--embed-init", "mean", "--tp-for-padding", "2"]) == 0
    meta = load_metadata(ckpt)
    assert meta.arch.vocab_size == len(tok) + 2 and meta.padded_vocab_size % 256 == 0
    # re-pad for TP=3 with the checkpoint's own tokenizer (docs/troubleshooting.md)
    repad = tmp_path / "ckpt-tp3"
    argv = ["--ckpt", str(ckpt), "--out", str(repad), "--new-tokenizer", str(ckpt / "tokenizer")]
    argv += ["--embed-init", "mean", "--tp-for-padding", "3", "--require-superset"]
    assert remap_vocab.main(argv) == 0
    meta3 = load_metadata(repad)
    assert meta3.arch.vocab_size == meta.arch.vocab_size and meta3.padded_vocab_size % 384 == 0
    capsys.readouterr()

    out = tmp_path / "hf-da"
    argv = ["--ckpt", str(repad), "--out", str(out), "--dtype", "float32"]
    # the export has the checkpoint's (changed) vocabulary: its logits are compared
    assert megatron_to_hf.main([*argv, "--verify", "--tolerance", "1e-4"]) == 0
    assert "max abs logit diff" in capsys.readouterr().out
    assert megatron_to_hf.main([*argv, "--overwrite"]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert exported.get_input_embeddings().weight.shape[0] == len(tok) + 2  # padding dropped
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("hyggeligt") == len(tok)
    bf16 = tmp_path / "hf-da-bf16"
    assert (
        megatron_to_hf.main(["--ckpt", str(repad), "--out", str(bf16), "--dtype", "bfloat16"]) == 0
    )
    assert AutoModelForCausalLM.from_pretrained(bf16).dtype == torch.bfloat16

    held = _toy.write_jsonl(tmp_path / "heldout.jsonl", _toy.danish_lines(4, seed=3))
    report = tmp_path / "ppl.json"
    argv = ["--models", f"meg={repad}", f"hf={out}", "--data", f"da={held}"]
    assert evaluate.main([*argv, "--output", str(report), "--no-progress"]) == 0
    rows = {r["model"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["meg"]["words"] == rows["hf"]["words"] > 0
    assert abs(rows["meg"]["loss_per_token"] - rows["hf"]["loss_per_token"]) < 1e-4


def test_the_recipes_use_the_documented_paths():
    """The analysis.md recipe imports what it names."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "analysis.md").read_text()
    assert "from tests.conversion._tiny import make_hf_model" in text
