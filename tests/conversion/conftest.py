"""Session fixture: every tiny family variant saved as HF and converted to Megatron once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conversion._tiny import hf_configs, make_hf_model


@dataclass
class TinyCase:
    name: str
    hf_dir: Path
    ckpt_dir: Path
    logits: torch.Tensor


@pytest.fixture(scope="session")
def tiny_cases(tmp_path_factory) -> dict[str, TinyCase]:
    from megatron_lang.conversion import hf_to_megatron

    root = tmp_path_factory.mktemp("tiny-conversion")
    cases = {}
    for name in hf_configs():
        hf_dir = root / f"{name}-hf"
        logits = make_hf_model(name, hf_dir)
        ckpt = root / f"{name}-megatron"
        hf_to_megatron(hf_dir, ckpt, vocab_divisor=128, tp_for_padding=2)
        cases[name] = TinyCase(name, hf_dir, ckpt, logits)
    return cases


@pytest.fixture(scope="session")
def smollm2_fp32_dir() -> Path:
    """SmolLM2-135M de-quantised from the GGUF to an fp32 safetensors HF directory.

    transformers 5.x refuses ``save_pretrained`` on a GGUF-loaded model (it counts
    as quantized), so the tensors, config and tokenizer are written directly.
    """
    from tests.conftest import _cached_dir, smollm2_gguf_path

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        save_file(sd, tmp / "model.safetensors", metadata={"format": "pt"})
        cfg = model.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(cfg, attr):
                delattr(cfg, attr)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _cached_dir("smollm2-hf-fp32-conversion", build)
