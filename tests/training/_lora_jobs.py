"""LoRA test jobs run on spawned gloo ranks (module-level, picklable)."""

from __future__ import annotations

import torch

PROMPT = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(3))
"""Fixed ``[2, 16]`` prompt for the tiny (vocab 512) models."""


def _full_b(name: str, shape: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(len(name) * 7919 + sum(map(ord, name)))
    return torch.randn(shape, generator=gen) * 0.05


def init_and_forward(tp: int) -> dict:
    """tiny-llama at TP=``tp``: logits before / after adding adapters, full A's, and the
    logits with a fixed non-zero full B in every adapter (sharded like the base)."""
    from megatron.core import parallel_state as ps

    from megatron_lang.config import LoraConfig, get_preset
    from megatron_lang.conversion.megatron_model import forward_logits
    from megatron_lang.models.arch import to_transformer_config
    from megatron_lang.models.gpt import build_gpt_model
    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.platform.parallel import ParallelLayout
    from megatron_lang.training import lora

    arch = get_preset("tiny-llama")
    arch = type(arch)(**{**arch.__dict__, "tie_word_embeddings": False})
    initialize_model_parallel(ParallelLayout(tensor_parallel=tp))
    set_seed(5)
    config = to_transformer_config(
        arch, torch.float32, tensor_model_parallel_size=tp, use_cpu_initialization=True
    )
    model = build_gpt_model(arch, config, use_te=False)
    model.eval()
    base = forward_logits(model, PROMPT, arch.vocab_size)
    cfg = LoraConfig(enabled=True, rank=4, alpha=8, target_modules=list(lora.TARGETS))
    names = lora.apply_lora(model, cfg, seed=11)
    adapted = forward_logits(model, PROMPT, arch.vocab_size)
    rank, size = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
    a_full, attrs = {}, {}
    modules = dict(model.named_modules())
    for name in names:
        ad = modules[name + lora.SUFFIX]
        parts = [torch.empty_like(ad.lora_A) for _ in range(size)]
        torch.distributed.all_gather(
            parts, ad.lora_A.detach().contiguous(), group=ps.get_tensor_model_parallel_group()
        )
        a_full[name] = torch.cat(parts, 1) if ad.parallel == "row" else parts[0]
        if ad.parallel == "column":
            assert all(torch.equal(p, parts[0]) for p in parts)
        attrs[name] = (
            ad.lora_A.tensor_model_parallel,
            ad.lora_B.tensor_model_parallel,
            ad.lora_A.requires_grad,
        )
        full_b = _full_b(
            name, (ad.lora_B.shape[0] * (size if ad.parallel == "column" else 1), cfg.rank)
        )
        if ad.parallel == "row":
            shard = full_b
        elif ad.glu:
            gate, up = torch.chunk(full_b, 2, 0)
            shard = torch.cat([torch.chunk(gate, size, 0)[rank], torch.chunk(up, size, 0)[rank]])
        else:
            shard = torch.chunk(full_b, size, 0)[rank]
        with torch.no_grad():
            ad.lora_B.copy_(shard)
    changed = forward_logits(model, PROMPT, arch.vocab_size)
    return {"base": base, "adapted": adapted, "a_full": a_full, "attrs": attrs, "changed": changed}


def adapted_logits(ckpt_dir: str) -> torch.Tensor:
    """Logits of a LoRA training checkpoint's model (adapters applied, not merged) on PROMPT."""
    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.megatron_model import forward_logits
    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.platform.parallel import ParallelLayout
    from megatron_lang.training.lora import load_adapted_model

    initialize_model_parallel(ParallelLayout())
    set_seed(0)
    model = load_adapted_model(ckpt_dir)
    return forward_logits(model, PROMPT, load_metadata(ckpt_dir).arch.vocab_size)
