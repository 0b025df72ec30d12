"""Tiny models of every family: Megatron logits (TP=1, TP=2, PP=2 on gloo) match transformers."""

from __future__ import annotations

import pytest

from tests._distributed import run_distributed
from tests.conversion._tiny import input_ids

LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}


def _logits_on_ranks(ckpts: dict[str, str]) -> dict:
    """Per rank: {(layout, case): logits or None}, for every layout and checkpoint."""
    from megatron.core import parallel_state

    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.megatron_model import forward_logits, load_model
    from megatron_lang.platform import ParallelLayout, initialize_model_parallel, set_seed

    out = {}
    for layout, (tp, pp) in LAYOUTS.items():
        for name, ckpt in ckpts.items():
            a = load_metadata(ckpt).arch
            initialize_model_parallel(
                ParallelLayout(tensor_parallel=tp, pipeline_parallel=pp),
                num_layers=a.num_layers,
                num_attention_heads=a.num_attention_heads,
                num_query_groups=a.num_query_groups,
            )
            set_seed(0)
            model, _ = load_model(ckpt)
            out[(layout, name)] = forward_logits(model, input_ids(), a.vocab_size)
            parallel_state.destroy_model_parallel()
    return out


@pytest.fixture(scope="module")
def megatron_logits(tiny_cases):
    ckpts = {name: str(c.ckpt_dir) for name, c in tiny_cases.items()}
    return run_distributed(_logits_on_ranks, 2, ckpts, timeout=240)


@pytest.mark.distributed
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["llama2", "llama3", "smollm2", "mistral01", "nemo", "qwen2"])
def test_megatron_logits_match_transformers(tiny_cases, megatron_logits, layout, name):
    ref = tiny_cases[name].logits
    got = [r[(layout, name)] for r in megatron_logits if r[(layout, name)] is not None]
    assert got, "no rank produced logits"
    for logits in got:  # every last-stage rank (both DP replicas at TP=1)
        assert logits.shape == ref.shape
        diff = (logits - ref).abs().max().item()
        assert diff < 1e-4, f"{name} at {layout}: max abs logit diff {diff:.3e}"
    assert ref.abs().max() > 0.1  # logits are not trivially small
