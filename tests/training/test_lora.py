"""LoRA: identity at init, TP-independent init and forward, adapters-only training,
TP=2 = TP=1, exact resume, merged and PEFT exports matching the adapted model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs, _lora_jobs

TARGETS = "[linear_qkv,linear_proj,linear_fc1,linear_fc2,output_layer]"


# ------------------------------------------------------------------------- unit
@pytest.mark.unit
def test_config_defaults_and_startup_checks():
    from megatron_lang.config import JobConfig, LoraConfig, load_job_config
    from megatron_lang.training.build import StartupError, check_startup, resolve_model
    from megatron_lang.training.stages import resolve_stages

    assert JobConfig().lora == LoraConfig()
    assert LoraConfig().enabled is False and LoraConfig().rank == 16
    assert resolve_stages(JobConfig())[0].trainable == ("all",)
    on = load_job_config(None, ["lora.enabled=true", "model.preset=tiny-llama"])
    assert resolve_stages(on)[0].trainable == ("lora",)

    def startup(*overrides: str) -> None:
        cfg = load_job_config(None, ["model.preset=tiny-llama", "lora.enabled=true", *overrides])
        check_startup(cfg, resolve_model(cfg).arch, world_size=2, hardware=False)

    startup()  # the defaults are valid
    for bad, words in [
        ("lora.rank=0", "lora.rank=0"),
        ("lora.dropout=1.0", "lora.dropout"),
        ("lora.target_modules=[linear_q]", "unknown ['linear_q']"),
        ("parallel.sequence_parallel=true parallel.tensor_parallel=2", "sequence_parallel"),
        ("model.transformer_engine=true", "transformer_engine=false"),
    ]:
        with pytest.raises(StartupError, match=words.replace("[", r"\[").replace("]", r"\]")):
            startup(*bad.split())
    with pytest.raises(StartupError, match="ties input and output"):
        startup("model.preset=tiny-smollm2", "lora.target_modules=[output_layer]")


@pytest.mark.unit
def test_split_of_fused_b_is_exact():
    """Per-projection (copied A, sliced B) reproduce the fused update B A exactly."""
    from megatron_lang.config import get_preset
    from megatron_lang.conversion.mapping import GATE_UP, QKV

    arch = get_preset("tiny-llama")
    gen = torch.Generator().manual_seed(0)
    for transform, rows in ((QKV, 64 + 2 * 32), (GATE_UP, 2 * 128)):
        a_RI = torch.randn(4, 64, generator=gen)
        b_OR = torch.randn(rows, 4, generator=gen)
        fused = transform.to_hf(b_OR @ a_RI, arch)
        split = [b @ a_RI for b in transform.to_hf(b_OR, arch)]
        assert all(torch.equal(x, y) for x, y in zip(fused, split))


# ------------------------------------------------------------------ distributed
@pytest.mark.distributed
def test_init_is_identity_and_tp_independent():
    from megatron_lang.training.lora import initial_a

    one = run_distributed(_lora_jobs.init_and_forward, 1, 1)[0]
    two = run_distributed(_lora_jobs.init_and_forward, 2, 2)
    for r in [one, *two]:
        assert torch.equal(r["base"], r["adapted"])  # B = 0: the base model, bitwise
        assert (r["changed"] - r["base"]).abs().max() > 1e-2  # a non-zero B does act
    assert len(one["a_full"]) == 2 * 4 + 1
    for name, a in one["a_full"].items():
        assert torch.equal(a, initial_a(11, name, 4, a.shape[1]))
        for r in two:
            assert torch.equal(r["a_full"][name], a)  # gathered TP=2 shards = the TP=1 A
            row = "linear_proj" in name or "linear_fc2" in name
            assert r["attrs"][name] == (row, not row, True)  # A sharded iff row-parallel
    # the forward all-reduces are in the right places: TP=2 = TP=1 with the same B
    assert (two[0]["changed"] - one["changed"]).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def lora_run(tiny_blend, tmp_path_factory) -> dict:
    """tiny HF Llama -> Megatron -> 4 LoRA steps at TP=2 (saves at 2 and 4) and at TP=1."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tools.convert_hf import hf_to_megatron

    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(tmp / "hf")
    for f in Path(tiny_blend["tokenizer"]).iterdir():
        shutil.copy(f, tmp / "hf" / f.name)
    assert hf_to_megatron.main(["--hf", str(tmp / "hf"), "--out", str(tmp / "mcore")]) == 0

    def overrides(**extra) -> list[str]:
        common = {
            "model.checkpoint": tmp / "mcore",
            "model.preset": None,
            "data.tokenizer": None,
            "lora.enabled": "true",
            "lora.rank": 4,
            "lora.alpha": 8,
            "lora.target_modules": TARGETS,
            "optimizer.lr": 1e-2,
            "optimizer.warmup_steps": 0,
            "train.steps": 4,
        }
        return _jobs.base_overrides(tiny_blend, **{**common, **extra})

    ckpt = tmp / "ckpt"
    tp2 = overrides(**{"parallel.tensor_parallel": 2, "checkpoint.dir": ckpt})
    tp2 += ["checkpoint.save_interval=2"]
    history = run_distributed(_jobs.train, 2, tp2)[0]
    reference = run_distributed(_jobs.train, 1, overrides())[0]
    return {"tmp": tmp, "ckpt": ckpt, "tp2": tp2, "history": history, "tp1": reference}


def _losses(history: list[dict]) -> list[float]:
    return [h["loss"] for h in history if "loss" in h]


@pytest.mark.distributed
def test_tp2_loss_curve_matches_tp1(lora_run):
    tp2, tp1 = _losses(lora_run["history"]), _losses(lora_run["tp1"])
    assert len(tp2) == len(tp1) == 4
    assert max(abs(a - b) for a, b in zip(tp2, tp1)) <= 1e-4
    assert tp2[-1] < tp2[0]  # the adapters did learn


@pytest.mark.distributed
def test_only_adapters_change(lora_run):
    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.convert import megatron_shape
    from megatron_lang.conversion.families import FAMILIES
    from megatron_lang.conversion.lora import LoraSpec, load_adapters
    from megatron_lang.conversion.mapping import expand
    from megatron_lang.conversion.megatron_io import load_tensors
    from megatron_lang.training.lora import initial_a

    start, final = lora_run["tmp"] / "mcore", lora_run["ckpt"] / "iter_0000004"
    meta = load_metadata(final)
    assert meta.extra["lora"]["rank"] == 4
    convs = expand(FAMILIES[meta.arch.family].rules, meta.arch)
    specs = {c.megatron: (megatron_shape(c, meta.padded_vocab_size), torch.float32) for c in convs}
    before = load_tensors(start, specs, meta.arch.num_layers)
    after = load_tensors(final, specs, meta.arch.num_layers)
    assert all(torch.equal(before[k], after[k]) for k in specs), "a base weight changed"
    spec = LoraSpec.from_metadata(meta)
    adapters = load_adapters(final, list(spec.adapted_layers(meta.arch)), spec, meta)
    assert len(adapters) == 9
    for weight, (a_RI, b_OR) in adapters.items():
        name = weight.removesuffix(".weight")
        assert b_OR.abs().max() > 0, f"{name}: B did not train"
        assert not torch.equal(a_RI, initial_a(1234, name, 4, a_RI.shape[1])), name


@pytest.mark.distributed
def test_resume_continues_exactly(lora_run):
    ckpt = lora_run["tmp"] / "resume"
    ckpt.mkdir()
    shutil.copytree(lora_run["ckpt"] / "iter_0000002", ckpt / "iter_0000002")
    (ckpt / "latest").write_text("iter_0000002\n")
    args = [a for a in lora_run["tp2"] if not a.startswith("checkpoint.dir=")]
    resumed = run_distributed(_jobs.train, 2, [*args, f"checkpoint.dir={ckpt}"])[0]
    steps = [h for h in resumed if "loss" in h]
    assert [h["step"] for h in steps] == [3, 4]
    original = [h["loss"] for h in lora_run["history"] if "loss" in h][2:]
    assert max(abs(h["loss"] - o) for h, o in zip(steps, original)) <= 1e-6


@pytest.mark.distributed
def test_merged_and_peft_exports_match_the_adapted_model(lora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tools.convert_hf import export_lora

    tmp, final = lora_run["tmp"], lora_run["ckpt"] / "iter_0000004"
    code = export_lora.main(
        ["--ckpt", str(final), "--merged", str(tmp / "merged"), "--peft", str(tmp / "peft"),
         "--base-model", str(tmp / "hf")]
    )  # fmt: skip
    assert code == 0
    # the checkpoint was written at TP=2 and is read here at TP=1 (resharded)
    ours = run_distributed(_lora_jobs.adapted_logits, 1, str(final))[0]
    prompt = _lora_jobs.PROMPT
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp / "merged").eval()(prompt).logits
        base = AutoModelForCausalLM.from_pretrained(tmp / "hf").eval()
        plain = base(prompt).logits
        peft_model = PeftModel.from_pretrained(base, tmp / "peft").eval()
        peft_logits = peft_model(prompt).logits
    assert (ours - plain).abs().max() > 1e-3  # the adapters changed the model
    assert (merged - ours).abs().max() <= 1e-4
    assert (peft_logits - ours).abs().max() <= 1e-4
    cfg = json.loads((tmp / "peft" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (4, 8)
    assert cfg["base_model_name_or_path"] == str(tmp / "hf")
    assert set(cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "lm_head",
    }
