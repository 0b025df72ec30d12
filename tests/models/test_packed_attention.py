"""Packed attention's kernels against a direct per-segment loop, and its host-sync freedom.

- the per-kind split (the TE THD path and the CUDA ``varlen_attn`` path) equals attending
  each segment;
- the PyTorch fallback runs under ``sdpa_kernel([SDPBackend.FLASH_ATTENTION])`` (its
  per-segment SDPA calls are 4-D, so fused kernels take them; 3-D calls only ever ran
  the math kernel, which keeps a ``[heads, l, l]`` softmax per segment);
- its ``varlen_attn`` route, with a device-only stand-in for the CUDA kernel, equals it;
- building the per-kind split copies nothing to the device inside the forward
  (``tests/_host_sync.py``; the whole model forward: ``tests/training/test_packed_attention.py``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from megatron_lang.data.packing import kind_split
from megatron_lang.models import packed_attention
from megatron_lang.models.packed_attention import (
    PackedDotProductAttention,
    attend_by_kind,
    packed_seq_params,
)
from tests._host_sync import HostSyncCheck

pytestmark = pytest.mark.unit

CU = [0, 5, 9, 16, 20, 24, 28]  # two runs of equal segments at the end
KINDS = {
    "mixed": [False, True, False, True, True, True],
    "mntp": [True] * 6,
    "causal": [False] * 6,
}


def _batch(cu, bidirectional):
    """The packed fields the training step reads (as ``pack_microbatch`` makes them)."""
    cu_t = torch.tensor(cu, dtype=torch.int32)
    return {
        "cu_seqlens": cu_t,
        "segments_host": (cu, bidirectional),
        "max_seqlen": max(b - a for a, b in zip(cu, cu[1:])),
        **kind_split(cu_t, torch.tensor(bidirectional)),
    }


def _per_segment(q, k, v, cu, kinds):
    """The reference: math SDPA per segment, GQA by repeating key/value heads."""
    rep = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(rep, dim=1) for x in (k, v))
    outs = []
    for i, bidir in enumerate(kinds):
        a, b = cu[i], cu[i + 1]
        with sdpa_kernel([SDPBackend.MATH]):
            o = F.scaled_dot_product_attention(
                *(x[a:b].transpose(0, 1) for x in (q, k, v)), is_causal=not bidir
            )
        outs.append(o.transpose(0, 1))
    return torch.cat(outs).reshape(q.shape[0], -1)


def fake_varlen_attn(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """``torch.nn.attention.varlen.varlen_attn``'s contract on any device, with device ops only.

    Same signature and checks; ``window_size`` must be the tuple ``(-1, 0)`` (causal) or
    ``(-1, -1)``: ``varlen_attn`` tests ``window_size == (-1, 0)``, a list is never
    causal. Attends through a dense same-segment mask built on the device from
    ``cu_seq_q``. Calls are recorded in ``fake_varlen_attn.calls``.
    """
    assert cu_seq_q.dtype == torch.int32 and cu_seq_k is not None
    assert isinstance(max_q, int) and isinstance(max_k, int)
    assert type(window_size) is tuple and window_size in ((-1, -1), (-1, 0)), window_size
    if not enable_gqa and query.shape[1] != key.shape[1]:
        raise ValueError("Expect query and key/value to have the same number of heads")
    fake_varlen_attn.calls.append((cu_seq_q, max_q, window_size))
    t = query.shape[0]
    pos = torch.arange(t, device=query.device, dtype=torch.int32)
    seg = torch.searchsorted(cu_seq_q[1:].contiguous(), pos, right=True)
    allowed = seg[:, None] == seg[None, :]
    if window_size == (-1, 0):
        allowed = allowed & (pos[:, None] >= pos[None, :])
    out = F.scaled_dot_product_attention(
        *(x.transpose(0, 1)[None] for x in (query, key, value)),
        attn_mask=allowed,
        scale=scale,
        enable_gqa=enable_gqa,
    )
    return out[0].transpose(0, 1)


fake_varlen_attn.calls = []


def _qkv(t=28, heads=4, groups=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = ((t, heads, dim), (t, groups, dim), (t, groups, dim))
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


def _attention(heads=4, groups=2, dim=8) -> PackedDotProductAttention:
    from megatron.core.transformer.enums import AttnMaskType

    config = SimpleNamespace(
        context_parallel_size=1,
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=dim,
        attention_dropout=0.0,
        sequence_parallel=False,
    )
    tp = SimpleNamespace(tp=SimpleNamespace(size=lambda: 1))
    return PackedDotProductAttention(config, 1, AttnMaskType.causal, "self", pg_collection=tp)


def _assert_same_with_grads(out, ref, inputs):
    torch.testing.assert_close(out, ref)
    g_out = torch.autograd.grad(out.square().sum(), inputs)
    g_ref = torch.autograd.grad(ref.square().sum(), inputs)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kinds", list(KINDS.values()), ids=list(KINDS))
def test_one_kernel_call_per_kind_equals_attending_each_segment(kinds):
    q, k, v = _qkv(groups=4)
    params = packed_seq_params(_batch(CU, kinds))
    calls = []

    def kernel(qq, kk, vv, plain, bidir):  # stands in for TE's THD kernel: one kind only
        calls.append(bidir)
        sub = plain.cu_seqlens_q.tolist()
        assert plain.max_seqlen_q == max(b - a for a, b in zip(sub, sub[1:]))
        return _per_segment(qq, kk, vv, sub, [bidir] * (len(sub) - 1))

    out = attend_by_kind(q, k, v, params, kernel)
    assert sorted(calls) == sorted(set(kinds))  # homogeneous batches: one call
    _assert_same_with_grads(out, _per_segment(q, k, v, CU, kinds), (q, k, v))


@pytest.mark.parametrize("kinds", list(KINDS.values()), ids=list(KINDS))
def test_fallback_runs_fused_kernels_only(kinds):
    """Under a flash-only SDPA the fallback runs (3-D calls raised "No available kernel")."""
    attention = _attention()
    q, k, v = _qkv()
    params = packed_seq_params(_batch(CU, kinds))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = attention(q, k, v, None, packed_seq_params=params)
        _assert_same_with_grads(out, _per_segment(q, k, v, CU, kinds), (q, k, v))
    # runs of equal segments of one kind go to SDPA as one [n, heads, l, dim] batch
    assert [count for _, count, _, _ in params.runs()] == [1, 1, 1, 3]


def test_varlen_route_matches_the_per_segment_reference(monkeypatch):
    """The CUDA route: one ``varlen_attn`` call per kind, causal as ``window_size=(-1, 0)``."""
    monkeypatch.setattr(packed_attention, "varlen_kernel", lambda query: fake_varlen_attn)
    monkeypatch.setattr(fake_varlen_attn, "calls", [])
    attention = _attention()
    kinds = KINDS["mixed"]
    q, k, v = _qkv()
    out = attention(q, k, v, None, packed_seq_params=packed_seq_params(_batch(CU, kinds)))
    _assert_same_with_grads(out, _per_segment(q, k, v, CU, kinds), (q, k, v))
    (causal_cu, causal_max, w0), (bidir_cu, bidir_max, w1) = fake_varlen_attn.calls
    assert (w0, w1) == ((-1, 0), (-1, -1))
    assert causal_cu.tolist() == [0, 5, 12] and causal_max == 7
    assert bidir_cu.tolist() == [0, 4, 8, 12, 16] and bidir_max == 4


def test_the_per_kind_split_copies_nothing_to_the_device_in_the_forward():
    """Index and offsets of each kind come with the batch (they were built, and copied to
    the device blocking, in the first layer's attention)."""
    q, k, v = _qkv(groups=4)
    batch = _batch(CU, KINDS["mixed"])
    check = HostSyncCheck(batch, q, k, v)
    with check:
        attend_by_kind(q, k, v, packed_seq_params(batch), lambda qq, kk, vv, p, b: qq)
    assert not check.events, check.report()
