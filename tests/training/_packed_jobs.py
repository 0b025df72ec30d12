"""Packed-attention jobs run on a spawned gloo rank (module-level, picklable)."""

from __future__ import annotations

import torch


def mixed_packed_batch(micro_batch: int = 4, seq_length: int = 32) -> dict:
    """A collated packed micro-batch holding causal and MNTP samples, several documents each."""
    from megatron_lang.training.data import collate

    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(micro_batch):
        cuts = sorted(torch.randperm(seq_length - 1, generator=g)[:2].add(1).tolist())
        segments = torch.zeros(seq_length, dtype=torch.int32)
        position_ids = torch.arange(seq_length)
        for c in cuts:
            segments[c:] += 1
            position_ids[c:] = torch.arange(seq_length - c)
        tokens = torch.randint(0, 512, (seq_length,), generator=g)
        samples.append(
            {
                "tokens": tokens,
                "labels": tokens.roll(-1),
                "loss_mask": torch.ones(seq_length),
                "position_ids": position_ids,
                "segments": segments,
                "mntp": torch.tensor(i % 2),
            }
        )
    return collate(samples)


def forward_syncs() -> dict:
    """Host syncs recorded during the packed forward of a hybrid micro-batch (tiny-llama, CPU).

    Once through the fallback's SDPA route (as on CPU), once through its CUDA varlen route
    with a device-only stand-in for ``varlen_attn`` (``tests/models/test_packed_attention.py``).
    Returns ``{route: {"events": ..., "report": ..., "loss": ...}}``.
    """
    from megatron_lang.config import get_preset
    from megatron_lang.models import packed_attention
    from megatron_lang.models.arch import to_transformer_config
    from megatron_lang.models.gpt import build_gpt_model
    from megatron_lang.platform import initialize_model_parallel, set_seed
    from megatron_lang.platform.parallel import ParallelLayout
    from megatron_lang.training import step
    from megatron_lang.training.data import to_device
    from tests._host_sync import HostSyncCheck
    from tests.models.test_packed_attention import fake_varlen_attn

    arch = get_preset("tiny-llama")
    initialize_model_parallel(ParallelLayout())
    set_seed(0)
    model = build_gpt_model(
        arch, to_transformer_config(arch, torch.float32), arbitrary_mask=True, packed=True
    )
    batch = to_device(mixed_packed_batch())
    assert sorted(set(batch["segments_host"][1])) == [False, True]  # both kinds
    out = {}
    original = getattr(packed_attention, "varlen_kernel", None)
    for route in ("sdpa", "varlen"):
        if route == "varlen":
            fake_varlen_attn.calls.clear()
            packed_attention.varlen_kernel = lambda query: fake_varlen_attn
        check = HostSyncCheck(model, batch)
        try:
            with check:
                output, _ = step.forward_step(0, iter([batch]), model)
        finally:
            packed_attention.varlen_kernel = original
        out[route] = {"events": check.events, "report": check.report(), "loss": output.sum()}
    out["varlen"]["kernel_calls"] = len(fake_varlen_attn.calls)
    return out
