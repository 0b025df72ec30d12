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
        from megatron_lang.conversion.hf_io import gguf_to_hf_dir

        made = gguf_to_hf_dir(smollm2_gguf_path(), tmp / "hf")
        for f in made.iterdir():
            f.rename(tmp / f.name)
        made.rmdir()

    return _cached_dir("smollm2-hf-fp32-conversion", build)
