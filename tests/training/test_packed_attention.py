"""Packed-sequence attention (THD segments, no [S, S] mask) equals the dense-mask reference.

The same start weights and the same first global batch go through the model built with
``model.attention=packed`` (our PyTorch SDPA core attention here; TE's THD kernels on
GPUs take the same packed params) and with ``model.attention=dense`` (megatron-core's
local DotProductAttention with explicit ``[b, 1, S, S]`` masks). Losses -- total, causal,
MNTP -- and every gradient must agree to float32 rounding, at TP=2 and at PP=2, for document-causal, hybrid (causal + MNTP samples mixed in one
micro-batch) and bidirectional runs. (Sequence parallelism needs TE or Apex norms, so
it is not run on CPU.)
"""

from __future__ import annotations

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs

pytestmark = pytest.mark.distributed

OBJECTIVES = {
    "document-causal": {"data.document_attention": True},
    "hybrid": {"objective.mntp_fraction": 0.5},
    "bidirectional": {"objective.bidirectional": True},
}
LAYOUTS = {
    "tp2": {"parallel.tensor_parallel": 2},
    "pp2": {"parallel.pipeline_parallel": 2},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_packed_attention_matches_the_dense_mask_reference(
    mask_blend,
    mask_start,
    objective,
    layout,
):
    overrides = _jobs.base_overrides(
        mask_blend,
        **{
            "model.checkpoint": mask_start,
            "model.arch.vocab_size": 513,
            **OBJECTIVES[objective],
            **LAYOUTS[layout],
        },
    )
    for rank in run_distributed(_jobs.first_step_grads, 2, overrides, ("packed", "dense")):
        packed, dense = rank["packed"], rank["dense"]
        assert "cu_seqlens" in packed["keys"] and "attention_mask" not in packed["keys"]
        assert "attention_mask" in dense["keys"] and "cu_seqlens" not in dense["keys"]
        for key in ("loss", "loss/causal", "loss/mntp", "tokens", "mntp_samples"):
            assert (key in packed["metrics"]) == (key in dense["metrics"]), key
            if key in dense["metrics"]:
                assert packed["metrics"][key] == pytest.approx(dense["metrics"][key], abs=1e-5)
        if objective == "hybrid":  # both kinds in the batch
            assert 0 < dense["metrics"]["mntp_samples"] < 8
        assert packed["grads"].keys() == dense["grads"].keys()
        for name, g in dense["grads"].items():
            assert g.abs().max() > 0 or "output_layer" in name, name  # the batch trains it
            torch.testing.assert_close(packed["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_the_packed_forward_never_syncs_with_the_device():
    """A hybrid micro-batch (causal and MNTP samples) through the fallback's SDPA route and
    its CUDA varlen route (device-only stand-in kernel): no host read of a device tensor
    and no host->device copy inside the forward (``tests/_host_sync.py``). Before, RoPE
    read the device ``cu_seqlens`` four times per layer (``.tolist()`` and a tensor
    ``bool`` per query and key) and the per-kind split was built and copied to the device
    in the first layer."""
    from tests.training import _packed_jobs

    routes = run_distributed(_packed_jobs.forward_syncs, 1)[0]
    for route, result in routes.items():
        assert not result["events"], f"{route}:\n{result['report']}"
    assert routes["varlen"]["kernel_calls"] == 2 * 2  # a call per kind and layer
    torch.testing.assert_close(routes["varlen"]["loss"], routes["sdpa"]["loss"])
