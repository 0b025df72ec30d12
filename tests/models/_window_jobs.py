"""Sliding-window models with explicit masks (run on a spawned gloo rank)."""

from __future__ import annotations

import torch


def window_outputs() -> dict:
    """Logits of a sliding-window tiny model: megatron-core's own window vs explicit masks."""
    from megatron_lang.config import load_job_config
    from megatron_lang.models.arch import to_transformer_config
    from megatron_lang.models.gpt import build_gpt_model
    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.training import build

    cfg = load_job_config(
        None,
        [
            "model.arch.sliding_window=16",
            "data.seq_length=16",
            "objective.bidirectional=true",
            "model.dtype=fp32",
        ],
    )
    arch = build.resolve_model(cfg).arch
    initialize_model_parallel(cfg.parallel)
    out = {}
    try:
        build_gpt_model(arch, to_transformer_config(arch, torch.float32), arbitrary_mask=True)
    except ValueError as e:
        out["refused"] = str(e)
    set_seed(1)
    windowed = build_gpt_model(arch, to_transformer_config(arch, torch.float32))  # own window
    config = build.transformer_config(cfg, arch)
    out["window_size"] = config.window_size
    masked = build_gpt_model(arch, config, arbitrary_mask=True)
    masked.load_state_dict(windowed.state_dict())
    tokens = torch.randint(0, arch.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(16).unsqueeze(0)
    causal = torch.ones(1, 1, 16, 16, dtype=torch.bool).triu(1)  # True = blocked
    with torch.no_grad():
        out["windowed"] = windowed(tokens, pos, None)
        out["causal"] = masked(tokens, pos, causal)
        out["bidirectional"] = masked(tokens, pos, torch.zeros_like(causal))
    return out
