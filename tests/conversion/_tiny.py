"""Tiny random HF models, one per supported family variant (fp32, CPU, built with from_config)."""

from __future__ import annotations

from pathlib import Path

import torch

SEQ = 12
"""Prompt length; longer than the Mistral test window (4) so the window matters."""

COMMON = dict(
    vocab_size=1000,  # not a multiple of 128: exercises padding
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
)


def hf_configs() -> dict:
    """Family variant -> HF config."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    return {
        "llama2": LlamaConfig(**COMMON),
        "llama3": LlamaConfig(
            **{**COMMON, "max_position_embeddings": 16384},
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
        "smollm2": LlamaConfig(**COMMON, tie_word_embeddings=True),
        "mistral01": MistralConfig(**COMMON, sliding_window=4, head_dim=16),
        "nemo": MistralConfig(**COMMON, head_dim=32, sliding_window=None),
        "qwen2": Qwen2Config(**{**COMMON, "num_key_value_heads": 4}, tie_word_embeddings=True),
    }


def input_ids() -> torch.Tensor:
    """Fixed ``[2, SEQ]`` prompt."""
    return torch.randint(
        0, COMMON["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(1)
    )


def make_hf_model(name: str, out_dir: Path, seed: int = 0) -> torch.Tensor:
    """Save a random HF model of variant ``name`` to ``out_dir``; return its logits on input_ids()."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_configs()[name], dtype=torch.float32)
    with torch.no_grad():  # biases are zero-initialised; make them count
        for n, p in model.named_parameters():
            if n.endswith(".bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out_dir, safe_serialization=True)
    with torch.no_grad():
        return model(input_ids()).logits.float()
