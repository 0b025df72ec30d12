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
"""

from __future__ import annotations

from typing import Any

import torch


def pack_microbatch(batch: dict[str, Any]) -> dict[str, Any]:
    """The micro-batch with its ``segments [b, S]`` replaced by THD packing metadata.

    Adds ``cu_seqlens`` (int32 ``[n+1]``, offsets into the ``b*S`` flattened tokens),
    ``segment_bidirectional`` (bool ``[n]``, from the sample's ``mntp`` flag; causal when
    the batch has none), ``max_seqlen`` (a Python int, the longest segment) and
    ``segments_host`` (both as Python lists, for host-side bookkeeping). A batch
    without ``segments`` is returned unchanged.
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
    return out
