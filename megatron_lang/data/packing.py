"""Packed micro-batches: per-document segments and ``cu_seqlens`` instead of ``[S, S]`` masks.

Samples whose attention is not plainly causal -- MNTP samples of the hybrid objective
(bidirectional within each document), bidirectional runs, ``data.document_attention``
(causal within each document) -- describe their attention by *segments*: a segment id
per position (``segments [S]``, the document index where attention stops at document
boundaries, else one segment for the whole sample) and the sample's kind (``mntp``: 1 =
bidirectional within its segments, 0 = causal within them).

:func:`pack_microbatch` turns a micro-batch of ``b`` such samples into one packed
sequence of ``b*S`` tokens, megatron-core's THD layout: ``cu_seqlens`` (int32, the
offsets where segments start, then ``b*S``), ``max_seqlen`` and a bidirectional flag per
segment. No ``[S, S]`` mask is built or moved: TransformerEngine's flash/cuDNN kernels
(``TEDotProductAttention`` with ``qkv_format="thd"``) and our PyTorch fallback
(:class:`megatron_lang.models.packed_attention.PackedDotProductAttention`) take these
directly. RoPE restarts at every segment in the THD layout (megatron-core's
``_apply_rotary_pos_emb_thd``); attention never crosses a segment and RoPE scores depend
only on the distance between positions, so this equals the dense-mask reference up to
float rounding.

Everything the attention needs is built here, with the batch, on the host: the per-kind
split of a micro-batch holding both kinds (:func:`kind_split`) and host copies of the
offsets. Moved to the GPU with the batch (pinned, non-blocking), nothing in the forward
waits for a host->device copy or reads a device tensor back.
"""

from __future__ import annotations

from typing import Any

import torch


def pack_microbatch(batch: dict[str, Any]) -> dict[str, Any]:
    """The micro-batch with its ``segments [b, S]`` replaced by THD packing metadata.

    Adds ``cu_seqlens`` (int32 ``[n+1]``, offsets into the ``b*S`` flattened tokens),
    ``segment_bidirectional`` (bool ``[n]``, from the sample's ``mntp`` flag; causal when
    the batch has none), ``max_seqlen`` (a Python int, the longest segment) and
    ``segments_host`` (both as Python lists, for host-side bookkeeping), and when the
    micro-batch holds causal and bidirectional segments the tensors of
    :func:`kind_split`. A batch without ``segments`` is returned unchanged.
    """
    if "segments" not in batch:
        return batch
    seg = torch.as_tensor(batch["segments"])
    if seg.dim() != 2:
        raise ValueError(f"segments must be [micro_batch, seq_length], got {tuple(seg.shape)}")
    b, s = seg.shape
    starts_BS = torch.ones(b, s, dtype=torch.bool)
    starts_BS[:, 1:] = seg[:, 1:] != seg[:, :-1]
    starts = torch.nonzero(starts_BS.reshape(-1)).squeeze(1)
    cu = torch.cat([starts, torch.tensor([b * s])]).to(torch.int32)
    if "mntp" in batch:
        bidirectional = torch.as_tensor(batch["mntp"]).view(-1).bool()[starts // s]
    else:
        bidirectional = torch.zeros(len(starts), dtype=torch.bool)
    out = {k: v for k, v in batch.items() if k != "segments"}
    out["cu_seqlens"] = cu
    out["segment_bidirectional"] = bidirectional
    out["max_seqlen"] = int((cu[1:] - cu[:-1]).max())
    # host copies (Python lists stay on the host when the batch moves to the GPU), so the
    # per-segment bookkeeping never waits for the device
    out["segments_host"] = (cu.tolist(), bidirectional.tolist())
    out.update(kind_split(cu, bidirectional))
    return out


KINDS = (("causal", False), ("bidirectional", True))
"""Batch-key prefix and bidirectional flag of the two segment kinds."""


def kind_split(cu_seqlens: torch.Tensor, bidirectional: torch.Tensor) -> dict[str, Any]:
    """The causal and the bidirectional segments of a packed sequence, each re-packed.

    For a sequence holding both kinds (``{}`` otherwise), per kind ``k`` in
    ``causal``/``bidirectional``: ``{k}_index`` (int64 ``[t_k]``, the positions of its
    tokens in the packed sequence, in order) and ``{k}_cu_seqlens`` (int32, the offsets
    of its segments among those tokens), plus ``kind_max_seqlen`` (``{k: longest
    segment}``, Python ints). Attention kernels that take one mask kind per call (TE's
    THD attention, ``varlen_attn``) attend each kind's tokens separately.

    Args:
        cu_seqlens: int ``[n+1]`` segment offsets (host).
        bidirectional: bool ``[n]``, the kind of each segment.
    """
    bidirectional = bidirectional.bool()
    if bidirectional.all() or not bidirectional.any():
        return {}
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    token_kind = torch.repeat_interleave(bidirectional, lengths)
    out: dict[str, Any] = {"kind_max_seqlen": {}}
    for name, flag in KINDS:
        own = lengths[bidirectional == flag]
        out[f"{name}_index"] = torch.nonzero(token_kind == flag).squeeze(1)
        out[f"{name}_cu_seqlens"] = torch.cat([own.new_zeros(1), own.cumsum(0)]).to(torch.int32)
        out["kind_max_seqlen"][name] = int(own.max())
    return out
