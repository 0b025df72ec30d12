"""Pipeline-parallel TransformerConfig options (Megatron-LM's training defaults)."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.config import load_job_config
from megatron_lang.training import build

pytestmark = pytest.mark.unit

FIELDS = ("deallocate_pipeline_outputs", "overlap_p2p_comm", "batch_p2p_comm")


def _config(*overrides: str):
    cfg = load_job_config(
        None, ["model.arch.num_layers=4", "model.transformer_engine=false", *overrides]
    )
    return build.transformer_config(cfg, build.resolve_model(cfg).arch)


def _values(config) -> dict[str, bool]:
    return {name: getattr(config, name) for name in FIELDS}


@pytest.fixture
def cuda(monkeypatch):
    """transformer_config as on a CUDA node (torch.cuda.is_available() -> True).

    megatron-core is imported first, unpatched, so no module caches a CUDA answer
    at import time for the rest of the session.
    """
    _config()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cuda_pp1_keeps_megatron_core_defaults(cuda):
    assert _values(_config()) == {
        "deallocate_pipeline_outputs": False,
        "overlap_p2p_comm": False,
        "batch_p2p_comm": True,
    }


def test_cuda_pp2_frees_sent_outputs_and_keeps_batched_p2p(cuda):
    # the 1F1B schedule without virtual stages refuses overlap_p2p_comm
    assert _values(_config("parallel.pipeline_parallel=2")) == {
        "deallocate_pipeline_outputs": True,
        "overlap_p2p_comm": False,
        "batch_p2p_comm": True,
    }


def test_cuda_interleaved_overlaps_p2p_without_batching(cuda):
    vpp = ["parallel.pipeline_parallel=2", "parallel.virtual_pipeline_parallel=2"]
    assert _values(_config(*vpp)) == {
        "deallocate_pipeline_outputs": True,
        "overlap_p2p_comm": True,
        "batch_p2p_comm": False,  # megatron-core: "Can not use both"
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU/gloo expectation")
@pytest.mark.parametrize("vpp", [None, 2])
def test_gloo_unbatched_p2p_without_overlap_and_frees_outputs(vpp):
    extra = [f"parallel.virtual_pipeline_parallel={vpp}"] if vpp else []
    assert _values(_config("parallel.pipeline_parallel=2", *extra)) == {
        "deallocate_pipeline_outputs": True,
        "overlap_p2p_comm": False,
        "batch_p2p_comm": False,  # cpu_support: gloo mismatches batched messages
    }


def test_options_by_layout():
    from megatron_lang.platform.parallel import ParallelLayout

    assert build.pipeline_comm_options(ParallelLayout(tensor_parallel=8), cuda=True) == {}
    assert build.pipeline_comm_options(ParallelLayout(pipeline_parallel=4), cuda=False) == {
        "deallocate_pipeline_outputs": True
    }


def test_cuda_vpp1_is_not_interleaved(cuda):
    # VPP=1 reaches megatron-core as None (the non-interleaved 1F1B schedule), which
    # raises "does not support overlapping p2p communication" if overlap_p2p_comm is on
    cfg = load_job_config(
        None,
        [
            "model.arch.num_layers=4",
            "model.transformer_engine=false",
            "parallel.pipeline_parallel=2",
            "parallel.virtual_pipeline_parallel=1",
        ],
    )
    assert cfg.parallel.virtual_pipeline_parallel is None
    config = build.transformer_config(cfg, build.resolve_model(cfg).arch)
    assert config.virtual_pipeline_model_parallel_size is None
    assert _values(config) == {
        "deallocate_pipeline_outputs": True,
        "overlap_p2p_comm": False,
        "batch_p2p_comm": True,
    }
