"""The product path end to end on a tiny model: HF -> Megatron -> train at TP=2 -> HF.

Both conversions are checked by logits, not by "it loads": the converted Megatron model
must give the HF model's logits before training, and the exported HF model the trained
Megatron checkpoint's after training (``megatron_lang.conversion.verify``, the machinery
of ``--verify``). A wrong entry in the family's mapping table or a wrong Q/K/V split
breaks both.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed

VOCAB = 512
# fp32 on both sides: the two implementations differ only by summation order (~1e-6 here);
# the logits of this random model have a spread of ~0.2, so a mapping error moves them far
# more than the tolerance (checked: see the assertion on the spread below)
TOLERANCE = 1e-4


def _random_hf_model(path: Path) -> None:
    """A random tiny Llama whose every tensor differs from the others.

    A fresh HF model has all RMSNorm weights equal to one, so norms swapped by a mapping
    would not show in the logits; they are drawn around one here.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(path)


def _verify(hf_dir: Path, ckpt: Path, exported: bool) -> None:
    """HF and Megatron logits agree on the verify prompt and on random full-length batches."""
    from megatron_lang.conversion.verify import verify_conversion

    on_prompt = verify_conversion(hf_dir, ckpt, TOLERANCE, exported=exported)
    assert on_prompt.num_tokens >= 16, on_prompt
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    report = verify_conversion(hf_dir, ckpt, TOLERANCE, input_ids=ids, exported=exported)
    assert report.ok and report.num_tokens == 128, report.summary()


def _logit_spread(hf_dir: Path) -> float:
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(hf_dir).eval()(ids).logits.std().item()


def test_hf_model_converts_trains_and_exports(tiny_blend, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tools.convert_hf import hf_to_megatron, megatron_to_hf

    hf = tmp_path / "hf"
    _random_hf_model(hf)
    for f in Path(tiny_blend["tokenizer"]).iterdir():
        shutil.copy(f, hf / f.name)
    assert _logit_spread(hf) > 1000 * TOLERANCE  # a wrong mapping cannot hide in the noise

    # HF -> Megatron: the converted model's logits are the HF model's
    mcore = tmp_path / "mcore"
    argv = ["--hf", str(hf), "--out", str(mcore), "--verify", "--tolerance", str(TOLERANCE)]
    assert hf_to_megatron.main(argv) == 0
    _verify(hf, mcore, exported=False)

    args = _jobs.base_overrides(
        tiny_blend,
        **{
            "model.checkpoint": mcore,
            "model.preset": None,
            "data.tokenizer": None,
            "parallel.tensor_parallel": 2,
            "train.steps": 4,
            "checkpoint.dir": tmp_path / "ckpt",
        },
    )
    history = run_distributed(_jobs.train, 2, args)[0]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(VOCAB)) < 0.1  # a random model's loss

    # Megatron (trained at TP=2) -> HF: the export's logits are the trained checkpoint's
    trained = tmp_path / "ckpt" / (tmp_path / "ckpt" / "latest").read_text().strip()
    out = tmp_path / "out"
    argv = ["--ckpt", str(trained), "--out", str(out), "--verify", "--tolerance", str(TOLERANCE)]
    assert megatron_to_hf.main(argv) == 0
    _verify(out, trained, exported=True)

    exported = AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 2
    before = load_file(hf / "model.safetensors")
    after = exported.state_dict()
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), "every tensor was trained"
