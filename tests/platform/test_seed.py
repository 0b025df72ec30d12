"""Seeding: each pipeline stage has its own random streams (Megatron-LM: seed + 100 x stage)."""

from __future__ import annotations

import pytest
import torch

from tests._distributed import run_distributed
from tests.platform import _engine_jobs

pytestmark = pytest.mark.distributed


def test_pipeline_stages_do_not_start_from_the_same_random_layers():
    first, second = run_distributed(_engine_jobs.stage_layer_weights, 2, 2)
    assert first.keys() == second.keys()
    linear = [k for k in first if k.endswith("weight") and first[k].dim() == 2]
    assert linear
    same = [k for k in linear if torch.equal(first[k], second[k])]
    # the same seed on every stage made stage 1's layer a copy of stage 0's
    assert not same, f"stage 1 repeats stage 0's initial weights in {same}"


def test_pipeline_stages_draw_their_own_dropout_and_random_streams():
    first, second = run_distributed(_engine_jobs.stage_random_draws, 2, 2)
    # the same seed on every stage gave every stage the same dropout masks
    same = [k for k in first if torch.equal(torch.as_tensor(first[k]), torch.as_tensor(second[k]))]
    assert not same, f"stage 1 draws what stage 0 draws from {same}"
