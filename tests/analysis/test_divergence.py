"""Weight divergence: zero against itself, exactly the changed tensor/row otherwise, plots, CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from megatron_lang.analysis.divergence import (
    COMPONENTS,
    LAYER_COMPONENTS,
    compute_divergence,
    format_table,
    write_outputs,
)
from megatron_lang.analysis.weights import DivergenceError
from megatron_lang.checkpointing.metadata import load_metadata
from tests.conversion._tiny import COMMON, make_hf_model

VOCAB = COMMON["vocab_size"]
NEW_TOKENS = ["hyggeligt", "smørrebrød", "Københavns"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tokenizer():
    """A word-level tokenizer with exactly VOCAB entries: [UNK], w1 ... w999."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _modified_copy(src: Path, dst: Path, edit) -> tuple[dict, dict]:
    """Copy an HF dir, applying ``edit(state_dict)`` to its tensors; return (before, after)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    before = load_file(src / "model.safetensors")
    after = {k: v.clone() for k, v in before.items()}
    edit(after)
    save_file(after, dst / "model.safetensors", metadata={"format": "pt"})
    return before, after


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny untied (llama2) and tied (smollm2) models as HF and as padded Megatron checkpoints."""
    from megatron_lang.conversion import hf_to_megatron

    root = tmp_path_factory.mktemp("divergence")
    tok = _tokenizer()
    out = {}
    for name in ("llama2", "smollm2"):
        hf = root / f"{name}-hf"
        make_hf_model(name, hf)
        tok.save_pretrained(hf)
        hf_to_megatron(hf, root / f"{name}-meg", vocab_divisor=128, tp_for_padding=2)
        out[f"{name}-hf"], out[f"{name}-meg"] = hf, root / f"{name}-meg"
    return out


def _all_zero(comparisons, vocab: int = VOCAB) -> None:
    for c in comparisons:
        assert len(c.tensors) > 0
        for t in c.tensors:
            s = t.stats
            assert (s.abs_sum, s.sq_diff, s.max_abs, s.rel_change) == (0, 0, 0, 0), t.name
            assert s.sq_base > 0, t.name
        for comp, s in c.by_component().items():
            assert s.mean_abs_diff == 0 and s.rel_change == 0, comp
        for tl in c.token_l1.values():
            assert tl["max"] == 0 and tl["top"] == [] and tl["rows"] == vocab
        assert c.vocab["identical"] and c.vocab["new"] == 0


@pytest.mark.unit
@pytest.mark.parametrize("family", ["llama2", "smollm2"])
@pytest.mark.parametrize("pair", [("hf", "hf"), ("meg", "meg"), ("hf", "meg"), ("meg", "hf")])
def test_self_divergence_is_zero(models, family, pair):
    a, b = (models[f"{family}-{k}"] for k in pair)
    report = compute_divergence([a, b], progress=False)
    _all_zero(report.comparisons)
    comps = set(report.comparisons[0].by_component())
    tied = family == "smollm2"
    assert comps == set(COMPONENTS) - ({"lm_head"} if tied else set())
    # q/k/v and gate/up reported separately for every layer, also from fused Megatron tensors
    names = {t.name for t in report.comparisons[0].tensors}
    for layer in range(COMMON["num_hidden_layers"]):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj"):
            assert f"model.layers.{layer}.{part}.weight" in names
    assert load_metadata(models[f"{family}-meg"]).padded_vocab_size == 1024  # 24 padding rows
    emb = next(t for t in report.comparisons[0].tensors if t.component == "embeddings")
    assert emb.shape == (VOCAB, COMMON["hidden_size"])  # padding rows trimmed


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tensor", "component", "layer"),
    [
        ("model.layers.1.mlp.up_proj.weight", "up", 1),
        ("model.layers.0.self_attn.k_proj.weight", "k", 0),
    ],
)
def test_only_the_changed_tensor_diverges(models, tmp_path, tensor, component, layer):
    from megatron_lang.conversion import hf_to_megatron

    def edit(sd):  # a known random delta on one tensor
        sd[tensor] += (
            torch.randn(sd[tensor].shape, generator=torch.Generator().manual_seed(3)) * 0.01
        )

    before, after = _modified_copy(models["llama2-hf"], tmp_path / "changed", edit)
    hf_to_megatron(tmp_path / "changed", tmp_path / "changed-meg", tp_for_padding=2)
    diff = after[tensor].double() - before[tensor].double()  # the delta as stored (fp32)
    expected_mean = float(diff.abs().mean())
    assert expected_mean > 0
    # HF vs HF, and Megatron vs Megatron (fused QKV / gate-up split back into components)
    for base, other in (
        (models["llama2-hf"], tmp_path / "changed"),
        (models["llama2-meg"], tmp_path / "changed-meg"),
    ):
        c = compute_divergence([base, other], progress=False).comparisons[0]
        changed = [t for t in c.tensors if t.stats.abs_sum > 0]
        assert [t.name for t in changed] == [tensor]
        s = changed[0].stats
        assert s.mean_abs_diff == pytest.approx(expected_mean, rel=1e-12)
        assert s.max_abs == pytest.approx(float(diff.abs().max()), rel=1e-12)
        rel = float(diff.norm() / before[tensor].double().norm())
        assert s.rel_change == pytest.approx(rel, rel=1e-9)
        by_comp = c.by_component()
        assert [k for k, v in by_comp.items() if v.abs_sum > 0] == [component]
        assert by_comp[component].mean_abs_diff == pytest.approx(
            expected_mean / COMMON["num_hidden_layers"], rel=1e-12
        )  # the other layer's tensor of this component is unchanged
        matrix = c.layer_matrix(COMMON["num_hidden_layers"])["rel_change"]
        nonzero = [
            (i, LAYER_COMPONENTS[j]) for i, row in enumerate(matrix) for j, v in enumerate(row) if v
        ]
        assert nonzero == [(layer, component)]
        assert all(tl["max"] == 0 for tl in c.token_l1.values())


@pytest.mark.unit
@pytest.mark.parametrize("family", ["llama2", "smollm2"])
def test_changed_embedding_row_is_top_token(models, tmp_path, family):
    from megatron_lang.conversion import hf_to_megatron

    row = 123
    bump = torch.linspace(-0.2, 0.3, COMMON["hidden_size"])

    def edit(sd):
        sd["model.embed_tokens.weight"][row] += bump

    before, after = _modified_copy(models[f"{family}-hf"], tmp_path / "changed", edit)
    hf_to_megatron(tmp_path / "changed", tmp_path / "changed-meg", tp_for_padding=2)
    name = "model.embed_tokens.weight"
    expected_l1 = float((after[name][row].double() - before[name][row].double()).abs().sum())
    # HF base against the padded Megatron checkpoint of the changed model
    c = compute_divergence(
        [models[f"{family}-hf"], tmp_path / "changed-meg"], progress=False
    ).comparisons[0]
    emb = c.token_l1["embeddings"]
    assert emb["changed_rows"] == 1
    top = emb["top"][0]
    assert (top["id"], top["token"], top["text"]) == (row, f"w{row}", f"w{row}")
    assert top["l1"] == pytest.approx(expected_l1, rel=1e-12)
    assert emb["max"] == pytest.approx(expected_l1, rel=1e-12)
    assert [t.name for t in c.tensors if t.stats.abs_sum > 0] == [name]
    if family == "smollm2":  # tied: the LM head is the embedding, not reported twice
        assert "lm_head" not in c.token_l1 and "lm_head" not in c.by_component()
    else:
        assert c.token_l1["lm_head"]["max"] == 0
    assert "w123" in format_table(
        compute_divergence([models[f"{family}-hf"], tmp_path / "changed"], progress=False)
    )


@pytest.mark.unit
def test_extended_vocabulary_compares_shared_rows(models, tmp_path):
    from megatron_lang.conversion import hf_to_megatron

    tok = _tokenizer()
    assert tok.add_tokens(NEW_TOKENS) == len(NEW_TOKENS)
    tok.save_pretrained(tmp_path / "newtok")
    ext = tmp_path / "ext-meg"
    hf_to_megatron(models["llama2-hf"], ext, new_tokenizer=tmp_path / "newtok", tp_for_padding=2)
    c = compute_divergence([models["llama2-hf"], ext], progress=False).comparisons[0]
    v = c.vocab
    assert (v["base_size"], v["size"], v["shared"], v["new"], v["removed"]) == (
        VOCAB,
        VOCAB + 3,
        VOCAB,
        3,
        0,
    )
    assert v["new_tokens"] == NEW_TOKENS
    assert set(v["new_rows"]) == {"embeddings", "lm_head"}
    assert v["new_rows"]["embeddings"]["count"] == 3 and v["new_rows"]["embeddings"]["mean_abs"] > 0
    assert all(t.stats.abs_sum == 0 for t in c.tensors)  # old tokens kept their rows
    assert c.token_l1["embeddings"]["rows"] == VOCAB

    # without the base's tokenizer the rows cannot be matched
    bare = tmp_path / "bare"
    shutil.copytree(models["llama2-hf"], bare)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    with pytest.raises(DivergenceError, match="no tokenizer files"):
        compute_divergence([bare, ext], progress=False)


def _fake_run(ckpt: Path, run: Path, steps: list[int]) -> None:
    """A training run folder: iter_N copies of ``ckpt`` with train_state.json, and ``latest``."""
    for step in steps:
        d = run / f"iter_{step:07d}"
        shutil.copytree(ckpt, d)
        (d / "train_state.json").write_text(json.dumps({"step": step}))
    (run / "latest").write_text(f"iter_{steps[-1]:07d}\n")


@pytest.mark.unit
def test_series_json_and_plots(models, tmp_path):
    from megatron_lang.conversion import hf_to_megatron

    name = "model.layers.1.mlp.down_proj.weight"
    _modified_copy(models["llama2-hf"], tmp_path / "c1", lambda sd: sd[name].add_(0.01))
    _modified_copy(models["llama2-hf"], tmp_path / "c2", lambda sd: sd[name].add_(0.03))
    hf_to_megatron(tmp_path / "c1", tmp_path / "c1-meg")
    hf_to_megatron(tmp_path / "c2", tmp_path / "c2-meg")
    run = tmp_path / "run"
    _fake_run(tmp_path / "c1-meg", run, [100])
    _fake_run(tmp_path / "c2-meg", run, [300])
    report = compute_divergence([models["llama2-hf"], run / "iter_0000100", run], progress=False)
    assert report.x_label == "step"
    assert [c.x for c in report.comparisons] == [100.0, 300.0]
    assert report.comparisons[1].checkpoint.label == "run/iter_0000300"  # via 'latest'
    down = [c.by_component()["down"].rel_change for c in report.comparisons]
    assert 0 < down[0] < down[1]

    out = tmp_path / "report"
    written = write_outputs(report, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {
        "heatmap-iter_0000100.png",
        "heatmap-run_iter_0000300.png",
        "series.png",
    }
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, p
    doc = json.loads((out / "divergence.json").read_text())
    assert doc["schema_version"] == 1 and doc["x_label"] == "step"
    assert doc["series_plot"] == "series.png"
    assert doc["components"] == list(COMPONENTS)
    assert doc["layer_components"] == list(LAYER_COMPONENTS)
    assert doc["base"]["kind"] == "hf" and doc["base"]["vocab_size"] == VOCAB
    assert doc["arch"]["num_layers"] == COMMON["num_hidden_layers"]
    c = doc["comparisons"][1]
    assert c["checkpoint"]["kind"] == "megatron" and c["checkpoint"]["step"] == 300
    assert c["heatmap"] == "heatmap-run_iter_0000300.png"
    assert set(c) == {
        "checkpoint",
        "x",
        "heatmap",
        "by_component",
        "by_layer",
        "token_l1",
        "vocab",
        "tensors",
    }
    assert set(c["by_component"]["down"]) == {
        "numel",
        "mean_abs_diff",
        "rel_change",
        "max_abs_diff",
        "l2_diff",
        "l2_base",
    }
    assert c["by_component"]["down"]["rel_change"] == pytest.approx(down[1])
    assert c["by_layer"]["components"] == list(LAYER_COMPONENTS)
    assert len(c["by_layer"]["rel_change"]) == COMMON["num_hidden_layers"]
    assert c["by_layer"]["rel_change"][0] == [0.0] * len(LAYER_COMPONENTS)
    assert {t["name"] for t in c["tensors"] if t["mean_abs_diff"] > 0} == {name}
    assert c["tensors"][0]["name"] == "model.embed_tokens.weight"
    assert not list(out.glob(".*"))  # no temporary files left


@pytest.mark.unit
def test_cli_prints_table_and_writes(models, tmp_path, capsys):
    from tools.analysis.divergence import main

    out = tmp_path / "out"
    rc = main(
        [str(models["smollm2-hf"]), str(models["smollm2-meg"]), "--out", str(out), "--no-progress"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "component" in text and "post_attention_norm" in text and "smollm2-meg" in text
    assert (out / "divergence.json").is_file() and (out / "heatmap-smollm2-meg.png").is_file()


def _bad_shape(models, tmp_path) -> Path:
    def edit(sd):
        sd["model.layers.1.mlp.up_proj.weight"] = sd["model.layers.1.mlp.up_proj.weight"][:-1]

    _modified_copy(models["llama2-hf"], tmp_path / "bad-shape", edit)
    return tmp_path / "bad-shape"


def _incomplete(models, tmp_path) -> Path:
    d = tmp_path / "incomplete"
    shutil.copytree(models["llama2-meg"], d)
    (d / "__0_0.distcp").unlink()
    return d


def _other_arch(models, tmp_path) -> Path:
    d = tmp_path / "other-arch"
    shutil.copytree(models["llama2-hf"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.unit
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("not-a-checkpoint", "is not a checkpoint"),
        ("arch", "different architectures: ffn_hidden_size is 96 in .* but 128 in"),
        ("tied", "different architectures: tie_word_embeddings"),
        ("shape", r"tensor 'model.layers.1.mlp.up_proj.weight' has shape \(95, 64\), expected"),
        ("one", "at least one"),
        ("incomplete", r"incomplete checkpoint, data file __0_0\.distcp is missing"),
    ],
)
def test_cli_errors_write_nothing(models, tmp_path, capsys, case, message):
    from tools.analysis.divergence import main

    base = str(models["llama2-hf"])
    (tmp_path / "empty").mkdir()
    args = {
        "missing": [base, str(tmp_path / "nope")],
        "not-a-checkpoint": [base, str(tmp_path / "empty")],
        "arch": [base, str(_other_arch(models, tmp_path))],
        "tied": [base, str(models["smollm2-meg"])],
        "shape": [base, str(_bad_shape(models, tmp_path))],
        "one": [base],
        "incomplete": [base, str(_incomplete(models, tmp_path))],
    }[case]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(message, captured.err), captured.err
    if case == "missing":
        assert str(tmp_path / "nope") in captured.err
    if case == "shape":
        assert "bad-shape" in captured.err  # names the checkpoint
    assert not out.exists()


@pytest.mark.distributed
def test_trainer_checkpoints(tmp_path):
    """Real trainer checkpoints (model + optimizer state, ``latest``) from a 4-step tiny run."""
    from megatron_lang.data.demo import build_demo_data
    from tests._distributed import run_distributed
    from tests.training import _jobs

    try:
        blend = build_demo_data(tmp_path / "data", docs_per_language=60)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    run = tmp_path / "ckpt"
    args = _jobs.base_overrides(
        blend, **{"train.steps": 4, "checkpoint.save_interval": 2, "checkpoint.dir": run}
    )
    run_distributed(_jobs.train, 1, args)
    report = compute_divergence([run / "iter_0000002", run / "iter_0000002", run], progress=False)
    same, trained = report.comparisons
    assert report.base.step == 2 and trained.checkpoint.step == 4 and report.x_label == "step"
    assert trained.checkpoint.label == "ckpt/iter_0000004"
    _all_zero([same], vocab=512)
    by_comp = trained.by_component()
    assert set(by_comp) == set(COMPONENTS)  # tiny-llama: untied
    assert all(s.mean_abs_diff > 0 and s.rel_change > 0 for s in by_comp.values())
    assert trained.token_l1["embeddings"]["top"][0]["token"] is not None  # decoded
