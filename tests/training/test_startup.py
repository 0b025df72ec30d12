"""Options that cannot work here fail at start with a message naming them."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.config import load_job_config
from megatron_lang.platform.parallel import ParallelConfigError
from megatron_lang.train import main
from megatron_lang.training.build import StartupError, check_startup, resolve_model

pytestmark = pytest.mark.unit

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only expectation")


def _check(*overrides, world=1, hardware=True):
    cfg = load_job_config(None, list(overrides))
    return check_startup(cfg, resolve_model(cfg).arch, world, hardware=hardware)


@cpu_only
@pytest.mark.parametrize(
    "override,message",
    [
        ("model.fp8=hybrid", "model.fp8='hybrid' needs a CUDA GPU with TransformerEngine"),
        ("model.transformer_engine=true", "model.transformer_engine=true but TransformerEngine"),
        ("parallel.sequence_parallel=true", "sequence_parallel needs TransformerEngine or Apex"),
    ],
)
def test_gpu_only_options_fail_on_cpu(override, message):
    extra = ["parallel.tensor_parallel=2"] if "sequence" in override else []
    world = 2 if extra else 1
    with pytest.raises(StartupError, match=message):
        _check(override, *extra, world=world)
    _check(override, *extra, world=world, hardware=False)  # a dry run accepts them


def test_context_parallel_needs_transformer_engine():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectation")
    with pytest.raises(StartupError, match="context_parallel=2 needs TransformerEngine"):
        _check("parallel.context_parallel=2", world=2)


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (["model.fp8=e5m2"], StartupError, "model.fp8='e5m2'"),
        (["optimizer.schedule=step"], StartupError, "optimizer.schedule='step'"),
        (["model.dtype=fp16"], StartupError, "model.dtype='fp16'"),
        (["model.preset=llama9"], StartupError, "unknown model preset 'llama9'"),
        (["parallel.pipeline_parallel=4"], ParallelConfigError, "PP=4 is larger than num_layers=2"),
        (
            ["optimizer.overlap_param_gather=true", "optimizer.use_distributed_optimizer=false"],
            StartupError,
            "overlap_param_gather needs use_distributed_optimizer",
        ),
    ],
)
def test_invalid_values(overrides, error, message):
    with pytest.raises(error, match=message):
        _check(*overrides, world=4)


def test_dry_run_cli(capsys):
    assert main(["--dry-run", "--world-size", "4", "parallel.tensor_parallel=2"]) == 0
    out = capsys.readouterr().out
    assert "layout: TP=2 x PP=1 x CP=1 x DP=2 (4 ranks)" in out
    assert "tensor_parallel: 2" in out  # the resolved config is printed
    assert main(["--dry-run", "optimizer.lrr=1"]) == 2
    assert "unknown config key 'optimizer.lrr'" in capsys.readouterr().err


def test_sliding_window_with_explicit_masks_past_the_window_is_refused():
    window = ["model.arch.sliding_window=32", "data.seq_length=64"]
    for mask in ("objective.mntp_fraction=0.1", "data.document_attention=true"):
        with pytest.raises(StartupError, match="longer than the model's sliding window"):
            _check(*window, mask, hardware=False)
    _check(*window, hardware=False)  # causal only: the window is applied by megatron-core
    _check("model.arch.sliding_window=64", "data.seq_length=64", "objective.mntp_fraction=0.1")
