"""Session fixture: every tiny family variant saved as HF and converted to Megatron once.

``smollm2_fp32_dir``, used by the adaptation and analysis tests too, is in
``tests/fixtures.py``.
"""

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
