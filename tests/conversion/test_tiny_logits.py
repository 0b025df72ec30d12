"""Tiny models of every family: Megatron logits (TP=1, TP=2, PP=2 on gloo) match transformers."""

from __future__ import annotations

import pytest
import torch

from tests._distributed import run_distributed
from tests.conversion._tiny import input_ids

LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}


RESAVE = {("tp2", "qwen2"), ("tp2", "nemo"), ("pp2", "llama2")}
"""Loaded models that are saved again with megatron-core's own save (sharded like training)."""


def _logits_on_ranks(ckpts: dict[str, str], resave_root: str) -> dict:
    """Per rank: {(layout, case): logits or None}, for every layout and checkpoint."""
    from megatron.core import dist_checkpointing, parallel_state

    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.megatron_model import forward_logits, load_model
    from megatron_lang.platform import ParallelLayout, initialize_model_parallel, set_seed
    from tests._collective_check import install

    install()  # the PP=2 stages' send/recv on tensors NCCL takes
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
            if (layout, name) in RESAVE:
                import shutil
                from pathlib import Path

                import torch.distributed as dist

                target = Path(resave_root) / f"{layout}-{name}"
                if dist.get_rank() == 0:
                    shutil.copytree(
                        ckpt, target, ignore=shutil.ignore_patterns("*.distcp", ".metadata")
                    )
                    (target / "metadata.json").unlink()
                dist.barrier()
                dist_checkpointing.save(model.sharded_state_dict(), str(target))
            parallel_state.destroy_model_parallel()
    return out


@pytest.fixture(scope="module")
def resave_root(tmp_path_factory):
    return tmp_path_factory.mktemp("resaved")


@pytest.fixture(scope="module")
def megatron_logits(tiny_cases, resave_root):
    ckpts = {name: str(c.ckpt_dir) for name, c in tiny_cases.items()}
    return run_distributed(_logits_on_ranks, 2, ckpts, str(resave_root), timeout=240)


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


@pytest.mark.distributed
@pytest.mark.parametrize("layout, name", sorted(RESAVE))
def test_export_of_checkpoint_saved_sharded_by_megatron(
    tiny_cases, megatron_logits, resave_root, tmp_path, layout, name
):
    """A checkpoint megatron-core saved from TP=2 / PP=2 ranks (as training does) exports
    to the original HF weights, bit for bit."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader

    from megatron_lang.conversion import megatron_to_hf

    ckpt = resave_root / f"{layout}-{name}"
    md = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    chunks = md["decoder.layers.mlp.linear_fc1.weight"].chunks
    assert len(chunks) == (8 if layout == "tp2" else 4)  # gate/up x TP ranks x layers
    megatron_to_hf(ckpt, tmp_path / "hf")
    before = load_file(tiny_cases[name].hf_dir / "model.safetensors")
    after = load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(before) == sorted(after)
    for k in before:
        assert torch.equal(before[k], after[k]), k


LONG = 2048
"""Prompt length of the RoPE scaling test. Logits of the tiny llama3 model with and without
llama3's scaling differ by 1.9e-5 at 12 tokens (under the 1e-4 tolerance), 3.6e-4 at 512,
1.6e-3 at 2048."""


@pytest.mark.unit
def test_llama3_rope_scaling_matches_transformers(tiny_cases):
    """Llama-3.1 RoPE scaling reaches megatron-core: its inverse frequencies equal transformers'
    llama3 rope init, and logits on a 2048-token prompt (where dropping the scaling moves the
    logits 16x the tolerance, checked here too) match transformers."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from megatron_lang.conversion.megatron_model import forward_logits, single_process_model

    case = tiny_cases["llama3"]
    hf = AutoModelForCausalLM.from_pretrained(case.hf_dir, dtype=torch.float32).eval()
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hf.config)
    plain, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf.config)
    assert (scaled != plain).sum() >= 2  # the config really scales some frequencies
    ids = torch.randint(0, 1000, (1, LONG), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(ids).logits.float()
        hf.model.rotary_emb.inv_freq = plain.clone()  # what a model without scaling does
        unscaled = hf(ids).logits.float()
    assert (unscaled - ref).abs().max() > 10 * 1e-4  # this prompt tells them apart

    with single_process_model(case.ckpt_dir) as (model, meta):
        inv_freq = model.rotary_pos_emb.inv_freq.detach().cpu()
        logits = forward_logits(model, ids, meta.arch.vocab_size)
    torch.testing.assert_close(inv_freq, scaled, rtol=1e-6, atol=0)
    diff = (logits - ref).abs().max().item()
    assert diff < 1e-4, f"llama3 on {LONG} tokens: max abs logit diff {diff:.3e}"
