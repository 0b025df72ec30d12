"""The per-kind split of packed attention (used by the TE THD path) against a direct loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_lang.models.packed_attention import attend_by_kind, packed_seq_params

pytestmark = pytest.mark.unit


def _params(cu, bidirectional):
    """The packed params the training step builds from a packed micro-batch."""
    return packed_seq_params(
        {
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32),
            "segments_host": (cu, bidirectional),
            "max_seqlen": max(b - a for a, b in zip(cu, cu[1:])),
        }
    )


def _per_segment(q, k, v, cu, kinds):
    outs = []
    for i, bidir in enumerate(kinds):
        a, b = cu[i], cu[i + 1]
        o = F.scaled_dot_product_attention(
            *(x[a:b].transpose(0, 1) for x in (q, k, v)), is_causal=not bidir
        )
        outs.append(o.transpose(0, 1))
    return torch.cat(outs).reshape(q.shape[0], -1)


@pytest.mark.parametrize(
    "kinds", [[False, True, False, True], [True] * 4, [False] * 4], ids=["mixed", "mntp", "causal"]
)
def test_one_kernel_call_per_kind_equals_attending_each_segment(kinds):
    torch.manual_seed(0)
    cu = [0, 5, 9, 16, 20]
    q, k, v = (torch.randn(20, 2, 8, requires_grad=True) for _ in range(3))
    params = _params(cu, kinds)
    calls = []

    def kernel(qq, kk, vv, plain, bidir):  # stands in for TE's THD kernel: one kind only
        calls.append(bidir)
        sub = plain.cu_seqlens_q.tolist()
        assert plain.max_seqlen_q == max(b - a for a, b in zip(sub, sub[1:]))
        return _per_segment(qq, kk, vv, sub, [bidir] * (len(sub) - 1))

    out = attend_by_kind(q, k, v, params, kernel)
    assert sorted(calls) == sorted(set(kinds))  # homogeneous batches: one call
    ref = _per_segment(q, k, v, cu, kinds)
    torch.testing.assert_close(out, ref)
    g_out = torch.autograd.grad(out.sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)
