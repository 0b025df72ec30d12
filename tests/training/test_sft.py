"""Instruction tuning: packed conversations attend alone, the loss is the global token mean."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _sft_jobs

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="session")
def chat_data(gimp_texts, smollm2_tokenizer_dir, tmp_path_factory) -> dict[str, str]:
    """Chat folders built from real Danish prose (GIMP manual): "continue this text"
    conversations of varied length, packed at 256 tokens with SmolLM2's ChatML template."""
    from megatron_lang.data.chat.preprocess import ChatDataConfig, build_chat_dataset

    root = tmp_path_factory.mktemp("chat-data")
    danish = gimp_texts[:25]  # the Danish pages
    sentences = [s.strip() for t in danish for s in re.split(r"(?<=[.!?])\s+", t) if s.strip()]
    records = []
    for i in range(0, len(sentences) - 4, 3):
        take = 1 + i % 3
        answer = " ".join(sentences[i + 1 : i + 1 + take])[:400]
        records.append(
            {
                "messages": [
                    {"role": "user", "content": f"Fortsæt teksten: {sentences[i][:200]}"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    out = {"tokenizer": str(smollm2_tokenizer_dir)}
    for name, part in (("train", records[:-20]), ("valid", records[-20:])):
        src = root / f"{name}.jsonl"
        src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in part) + "\n")
        build_chat_dataset(
            ChatDataConfig([str(src)], str(root / name), str(smollm2_tokenizer_dir), 256),
            progress=False,
        )
        out[name] = str(root / name)
    return out


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_packed_conversation_logits_equal_alone(chat_data, layout):
    extra = (
        {"parallel.tensor_parallel": 2} if layout == "tp2" else {"parallel.pipeline_parallel": 2}
    )
    overrides = _sft_jobs.sft_overrides(chat_data, **extra)
    results = run_distributed(_sft_jobs.packed_vs_alone, 2, overrides)
    diffs = [d for r in results if r for d in r]
    assert len(diffs) >= 4
    assert max(diffs) < 1e-4, diffs


def test_loss_is_global_token_mean_whatever_the_micro_batches(chat_data):
    one = _sft_jobs.sft_overrides(chat_data, **{"data.micro_batch_size": 8})
    four = _sft_jobs.sft_overrides(chat_data, **{"data.micro_batch_size": 2})
    a = run_distributed(_sft_jobs.first_step, 1, one)[0]
    b = run_distributed(_sft_jobs.first_step, 1, four)[0]
    assert len(a["tokens"]) == 1 and len(b["tokens"]) == 4
    # the micro-batches carry different numbers of trained tokens: a mean of micro-batch
    # means would differ from the token mean
    assert max(b["tokens"]) > 1.2 * min(b["tokens"])
    assert a["metrics"]["tokens"] == b["metrics"]["tokens"] == sum(b["tokens"])
    assert a["metrics"]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-6)
    for name, g in a["grads"].items():
        torch.testing.assert_close(b["grads"][name], g, rtol=1e-5, atol=1e-7, msg=name)


def _steps(history: list[dict]) -> list[tuple[int, float]]:
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def test_dp2_chat_run_over_two_epochs_resumes_bitwise(chat_data, tmp_path):
    """Full fine-tuning at DP=2 with the distributed optimizer for two epochs (epoch
    boundary inside the run, each epoch its own shuffle): resuming the step-3 checkpoint
    repeats the uninterrupted losses exactly, and validation loss is reported."""
    import shutil

    from megatron_lang.data.chat.dataset import read_report
    from tests.training import _jobs

    samples = int(read_report(chat_data["train"])["packing"]["samples"])
    ckpt = tmp_path / "ckpt"
    overrides = _sft_jobs.sft_overrides(
        chat_data,
        **{
            "train.epochs": 2,
            "data.global_batch_size": 16,
            "data.micro_batch_size": 8,
            "checkpoint.dir": ckpt,
            "checkpoint.save_interval": 3,
            "train.eval_interval": 3,
            "train.eval_steps": 1,
        },
    )
    full = run_distributed(_jobs.train, 2, overrides)[0]
    losses = _steps(full)
    steps = -(-2 * samples // 16)
    assert [s for s, _ in losses] == list(range(1, steps + 1))
    assert steps > 4 and samples // 16 >= 3  # the resume point is in epoch 1, epoch 2 follows
    valid = [h for h in full if any(k.startswith("valid") for k in h)]
    assert valid, full
    resumed_dir = tmp_path / "resume"
    resumed_dir.mkdir()
    shutil.copytree(ckpt / "iter_0000003", resumed_dir / "iter_0000003")
    (resumed_dir / "latest").write_text("iter_0000003\n")
    args = [a for a in overrides if not a.startswith("checkpoint.dir=")]
    resumed = run_distributed(_jobs.train, 2, [*args, f"checkpoint.dir={resumed_dir}"])[0]
    assert _steps(resumed) == losses[3:]  # bitwise: same floats, same steps


def test_chat_lora_with_output_layer_at_tp2_learns_and_exports_the_chat_format(chat_data, tmp_path):
    """SnakModel's LoRA (all linear layers and the output layer) on chat data at TP=2:
    the answer loss falls; the merged model and the PEFT adapter both carry the trained
    chat template, and the merged model's generation config stops at the end-of-turn."""
    from transformers import AutoTokenizer, GenerationConfig

    from megatron_lang.data.chat.dataset import read_report
    from tests.training import _jobs
    from tools.convert_hf import export_lora

    ckpt = tmp_path / "ckpt"
    targets = "[linear_qkv,linear_proj,linear_fc1,linear_fc2,output_layer]"
    overrides = _sft_jobs.sft_overrides(
        chat_data,
        **{
            "parallel.tensor_parallel": 2,
            "lora.enabled": "true",
            "lora.rank": 8,
            "lora.alpha": 16,
            "lora.target_modules": targets,
            "optimizer.lr": 1e-2,
            "train.steps": 5,
            "train.eval_at_start": "true",
            "checkpoint.dir": ckpt,
        },
    )
    history = run_distributed(_jobs.train, 2, overrides)[0]
    valid = [h["valid/chat/loss"] for h in history if "valid/chat/loss" in h]
    assert len(valid) == 2 and valid[-1] < valid[0] - 0.05, valid
    final = ckpt / (ckpt / "latest").read_text().strip()
    merged, peft = tmp_path / "merged", tmp_path / "peft"
    assert export_lora.main(
        ["--ckpt", str(final), "--merged", str(merged), "--peft", str(peft)]
    ) == 0  # fmt: skip
    report = read_report(chat_data["train"])
    template = report["template"]["jinja"]
    messages = [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Goddag"}]
    for folder in (merged, peft):
        assert (folder / "chat_template.jinja").read_text() == template, folder
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.chat_template == template
        assert tok.apply_chat_template(messages, tokenize=False).endswith("Goddag<|im_end|>\n")
    gen = GenerationConfig.from_pretrained(merged)
    assert gen.eos_token_id[0] == report["end_of_turn"]["id"]
    adapter = json.loads((peft / "adapter_config.json").read_text())
    assert "lm_head" in adapter["target_modules"]
