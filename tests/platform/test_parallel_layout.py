"""Validation of parallel layouts: bad configurations fail at start with the values and the rule."""

from __future__ import annotations

import pytest

from megatron_lang.platform import ParallelConfigError, ParallelLayout, validate_layout
from tests._distributed import run_distributed


def L(tp=1, pp=1, cp=1, vpp=None, sp=False):
    return ParallelLayout(tp, pp, vpp, cp, sp)


@pytest.mark.unit
@pytest.mark.parametrize(
    "layout,world,kwargs,message",
    [
        (L(tp=3), 3, dict(num_attention_heads=4), r"TP=3 does not divide num_attention_heads=4"),
        (
            L(tp=2),
            2,
            dict(num_attention_heads=4, num_query_groups=1),
            r"TP=2 does not divide num_query_groups \(KV heads\)=1",
        ),
        (L(pp=4), 4, dict(num_layers=2), r"PP=4 is larger than num_layers=2"),
        (L(pp=2), 2, dict(num_layers=3), r"PP=2 does not divide num_layers=3"),
        (L(tp=2), 3, {}, r"world size 3 is not divisible by TP x PP x CP = 2 x 1 x 1 = 2"),
        (
            L(tp=2, pp=2, cp=2),
            12,
            {},
            r"world size 12 is not divisible by TP x PP x CP = 2 x 2 x 2 = 8",
        ),
        (L(vpp=2), 1, {}, r"virtual PP=2 needs PP >= 2"),
        (L(pp=2, vpp=2), 2, dict(num_layers=6), r"PP x VPP = 2 x 2 does not divide num_layers=6"),
        (L(cp=2), 2, dict(seq_length=6), r"sequence length 6 is not divisible by 2 x CP = 4"),
        (L(sp=True), 1, {}, r"sequence_parallel needs TP > 1"),
        (L(tp=0), 1, {}, r"TP must be a positive integer, got 0"),
    ],
)
def test_bad_layouts_are_rejected(layout, world, kwargs, message):
    with pytest.raises(ParallelConfigError, match=message):
        validate_layout(layout, world, **kwargs)


@pytest.mark.unit
def test_good_layout_and_derived_dp():
    layout = L(tp=2, pp=2, cp=1, vpp=2)
    validate_layout(
        layout, 16, num_layers=8, num_attention_heads=32, num_query_groups=8, seq_length=4096
    )
    assert layout.data_parallel_size(16) == 4
    assert layout.describe(16) == "TP=2 x PP=2 (VPP=2) x CP=1 x DP=4 (16 ranks)"


def _init_tp2():
    from megatron_lang.platform import initialize_model_parallel

    try:
        initialize_model_parallel(ParallelLayout(tensor_parallel=2), num_attention_heads=4)
    except ParallelConfigError as e:
        return str(e)
    return None


@pytest.mark.distributed
def test_world_of_three_with_tp2_fails_at_start():
    messages = run_distributed(_init_tp2, 3)
    assert all(m is not None and "world size 3 is not divisible" in m for m in messages)
