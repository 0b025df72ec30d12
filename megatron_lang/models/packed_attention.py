"""Core attention over packed sequences (THD): per-document causal or bidirectional segments.

A packed micro-batch (:mod:`megatron_lang.data.packing`) is one sequence of ``t`` tokens
cut into segments by ``cu_seqlens``; each segment attends only within itself, causally
or (MNTP samples) bidirectionally. :class:`SegmentedPackedSeqParams` carries that to the
core attention of every layer through megatron-core's ``packed_seq_params``.

Two core attentions take it:

- :func:`te_packed_attention`: TransformerEngine's ``TEDotProductAttention`` (flash /
  cuDNN fused kernels, THD) with ``padding_causal`` for causal segments and ``padding``
  for bidirectional ones. A micro-batch holding both kinds (hybrid objective with
  ``micro_batch_size > 1``) is split into its causal and its bidirectional tokens, one
  kernel call each.
- :class:`PackedDotProductAttention`, for installs without TransformerEngine (every
  LoRA job) and for CPU: on CUDA in bf16/fp16 PyTorch's ``varlen_attn`` (flash
  attention on THD tensors with ``cu_seqlens``, GQA native), one kernel call per segment
  kind like TE; elsewhere (CPU, fp32, attention dropout) ``scaled_dot_product_attention``
  on 4-D ``[n, heads, l, dim]`` views of runs of equal segments, so its fused kernels
  (flash, memory-efficient; flash on CPU) apply and no ``[l, l]`` softmax is kept for
  the backward. Without packed params it is plain attention with the layer's causal
  mask or a given dense mask.

Nothing here syncs with the device: the per-kind token indices and offsets are built
with the batch (:func:`~megatron_lang.data.packing.kind_split`), segment loops run over
host lists, and megatron-core's unfused THD RoPE gets a host copy of the offsets
(``cu_seqlens_q_padded``, equal to ``cu_seqlens_q``: there is no padding), which it
reads with ``.tolist()`` on every layer.

megatron-core's local ``DotProductAttention`` with dense ``[b, 1, S, S]`` masks stays the
reference (``model.attention=dense``) the tests hold both to.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.module import MegatronModule


@dataclass
class SegmentedPackedSeqParams(PackedSeqParams):
    """megatron-core's THD ``PackedSeqParams`` plus the attention kind of every segment.

    ``cu_seqlens_q_padded``/``cu_seqlens_kv_padded`` may hold a *host* copy of
    ``cu_seqlens`` (see :func:`packed_seq_params`): megatron-core's unfused THD RoPE
    prefers them and reads them with ``.tolist()``; the core attentions here never
    pass them on.
    """

    bidirectional: list[bool] = field(default_factory=list)
    """Per segment: attends both ways (MNTP) instead of causally."""
    cu_seqlens_host: list[int] = field(default_factory=list)
    """``cu_seqlens`` as Python ints (segment loops without a device sync)."""
    groups: list[tuple[torch.Tensor | None, PackedSeqParams, bool]] = field(
        default_factory=list, repr=False
    )
    """See :meth:`kind_groups`."""
    _runs: list | None = field(default=None, repr=False, compare=False)

    def kind_groups(self) -> list[tuple[torch.Tensor | None, PackedSeqParams, bool]]:
        """``[(token index or None, plain PackedSeqParams, bidirectional)]``, one per kind.

        One entry (index None) when all segments are of one kind; else the causal and the
        bidirectional segments, each re-packed over its own tokens (built with the batch).
        """
        return self.groups

    def runs(self) -> list[tuple[int, int, int, bool]]:
        """``[(start, count, length, bidirectional)]``: maximal runs of consecutive segments
        of one kind and one length (host ints), each attended as one ``[count, heads,
        length, dim]`` batch."""
        if self._runs is not None:  # every layer asks
            return self._runs
        cu, kinds = self.cu_seqlens_host, self.bidirectional
        out: list[tuple[int, int, int, bool]] = []
        for i, bidirectional in enumerate(kinds):
            length = cu[i + 1] - cu[i]
            if out and out[-1][2] == length and out[-1][3] == bidirectional:
                start, count, _, _ = out[-1]
                out[-1] = (start, count + 1, length, bidirectional)
            else:
                out.append((cu[i], 1, length, bidirectional))
        self._runs = out
        return out


def packed_seq_params(batch: dict[str, Any], host_rope: bool = True) -> SegmentedPackedSeqParams:
    """The packed params of a micro-batch from :func:`~megatron_lang.data.packing.pack_microbatch`.

    ``cu_seqlens`` and the per-kind tensors are used on the batch's device (the GPU once
    moved, with the batch); the segment loops use the batch's host lists
    (``segments_host``).

    Args:
        batch: the packed micro-batch.
        host_rope: give megatron-core's unfused THD RoPE a host copy of the offsets
            (``cu_seqlens_q_padded``), so it splits the sequence without reading the
            device; False where the RoPE is TE's fused kernel (``apply_rope_fusion``),
            which takes the device offsets.
    """
    from megatron_lang.data.packing import KINDS

    cu = batch["cu_seqlens"]
    cu_host, bidirectional = batch["segments_host"]  # host lists: no device sync
    longest = int(batch["max_seqlen"])
    if "kind_max_seqlen" in batch:  # both kinds: split with the batch (kind_split)
        groups = []
        for name, flag in KINDS:
            sub_cu, sub_max = batch[f"{name}_cu_seqlens"], batch["kind_max_seqlen"][name]
            plain = PackedSeqParams(
                qkv_format="thd",
                cu_seqlens_q=sub_cu,
                cu_seqlens_kv=sub_cu,
                max_seqlen_q=sub_max,
                max_seqlen_kv=sub_max,
            )
            groups.append((batch[f"{name}_index"], plain, flag))
    elif len(set(bidirectional)) > 1:
        raise ValueError(
            "a packed micro-batch with causal and bidirectional segments needs the per-kind "
            "split of megatron_lang.data.packing.kind_split (pack_microbatch adds it)"
        )
    else:
        plain = PackedSeqParams(
            qkv_format="thd",
            cu_seqlens_q=cu,
            cu_seqlens_kv=cu,
            max_seqlen_q=longest,
            max_seqlen_kv=longest,
        )
        groups = [(None, plain, bool(bidirectional and bidirectional[0]))]
    host = torch.tensor(cu_host, dtype=torch.int32) if host_rope else None
    return SegmentedPackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu,
        cu_seqlens_q_padded=host,
        cu_seqlens_kv_padded=host,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
        bidirectional=bidirectional,
        cu_seqlens_host=cu_host,
        groups=groups,
    )


def varlen_kernel(query: torch.Tensor) -> Any:
    """PyTorch's ``varlen_attn`` where it runs on ``query``, else None.

    It is flash attention only: CUDA (sm80+, PyTorch built with flash attention),
    bf16/fp16, a head dimension that is a multiple of 8 up to 256. (No dropout either;
    the caller checks that.)
    """
    if not query.is_cuda or query.dtype not in (torch.bfloat16, torch.float16):
        return None
    dim = query.shape[-1]
    if dim % 8 or dim > 256 or not torch.backends.cuda.is_flash_attention_available():
        return None
    if torch.cuda.get_device_capability(query.device) < (8, 0):
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # PyTorch before 2.10
        return None
    return varlen_attn


class PackedDotProductAttention(MegatronModule):
    """Core attention over PyTorch's ``varlen_attn`` / ``scaled_dot_product_attention``.

    Same constructor and ``forward`` as megatron-core's core attentions. With
    :class:`SegmentedPackedSeqParams` (THD: ``query [t, heads, dim]``) it attends per
    segment, causally or bidirectionally: through ``varlen_attn`` (one flash kernel per
    segment kind, :func:`attend_by_kind`) where :func:`varlen_kernel` allows and
    attention dropout is off, else through SDPA on 4-D views of the runs of equal
    segments (:meth:`SegmentedPackedSeqParams.runs`). Without packed params
    (``[s, b, heads, dim]``) it applies the given dense mask (True = masked out) or, with
    none, the layer's causal mask. Grouped query attention needs no key/value copies
    (``enable_gqa``).
    """

    def __init__(
        self,
        config: Any,
        layer_number: int,
        attn_mask_type: Any,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: Any = None,
    ):
        super().__init__(config=config)
        from megatron.core.transformer.enums import AttnMaskType
        from megatron.core.utils import divide

        if config.context_parallel_size != 1:
            raise ValueError(
                "PackedDotProductAttention has no context parallelism; use parallel.context_"
                "parallel=1, or TransformerEngine on GPUs"
            )
        if pg_collection is None:
            from megatron.core.process_groups_config import ProcessGroupCollection

            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.config = config
        self.layer_number = max(1, layer_number)
        self.causal = attn_mask_type == AttnMaskType.causal
        self.heads = divide(config.num_attention_heads, tp)
        self.groups = divide(config.num_query_groups or config.num_attention_heads, tp)
        self.head_dim = config.kv_channels
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def _sdpa(self, q, k, v, mask=None, causal=False):
        import torch.nn.functional as F

        dropout = self.dropout if self.training else 0.0
        gqa = self.heads != self.groups
        if gqa and q.is_cuda and q.dtype not in (torch.float16, torch.bfloat16):
            # fp32 on CUDA: the fused kernel is the memory-efficient one, which takes no
            # enable_gqa (SDPA would fall back to the math kernel and keep [l, l] scores)
            k, v = (x.repeat_interleave(self.heads // self.groups, dim=-3) for x in (k, v))
            gqa = False
        kwargs = dict(
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=gqa,
        )
        if dropout and not self.config.sequence_parallel:
            from megatron.core import tensor_parallel

            with tensor_parallel.get_cuda_rng_tracker().fork():
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    def _varlen(self, kernel, q, k, v, params: PackedSeqParams, bidirectional: bool):
        out = kernel(
            q,
            k,
            v,
            params.cu_seqlens_q,
            params.cu_seqlens_kv,
            params.max_seqlen_q,
            params.max_seqlen_kv,
            scale=self.softmax_scale,
            window_size=(-1, -1) if bidirectional else (-1, 0),  # (-1, 0): causal
            enable_gqa=self.heads != self.groups,
        )
        return out.reshape(out.shape[0], self.heads * self.head_dim)

    def _per_segment_runs(self, query, key, value, params: SegmentedPackedSeqParams):
        outs = []
        for start, count, length, bidirectional in params.runs():
            end = start + count * length
            q, k, v = (
                x[start:end].unflatten(0, (count, length)).transpose(1, 2)  # [n, heads, l, d]
                for x in (query, key, value)
            )
            out = self._sdpa(q, k, v, causal=not bidirectional)
            outs.append(out.transpose(1, 2).reshape(end - start, self.heads * self.head_dim))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: Any = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise ValueError("PackedDotProductAttention takes no attention bias")
        if packed_seq_params is not None:
            if not isinstance(packed_seq_params, SegmentedPackedSeqParams):
                raise TypeError(
                    "packed sequences need SegmentedPackedSeqParams (per-segment kinds)"
                )
            kernel = varlen_kernel(query)
            if kernel is not None and not (self.training and self.dropout):
                return attend_by_kind(
                    query, key, value, packed_seq_params, functools.partial(self._varlen, kernel)
                )
            return self._per_segment_runs(query, key, value, packed_seq_params)
        s, b = query.shape[:2]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, heads, s, d]
        if attention_mask is not None:
            out = self._sdpa(q, k, v, mask=~attention_mask.bool())
        else:
            out = self._sdpa(q, k, v, causal=self.causal)
        return out.permute(2, 0, 1, 3).reshape(s, b, self.heads * self.head_dim)


def attend_by_kind(query, key, value, params: SegmentedPackedSeqParams, kernel) -> torch.Tensor:
    """Packed attention with one ``kernel`` call per segment kind.

    ``kernel(q, k, v, plain_params, bidirectional)`` attends THD tensors whose segments
    are all of one kind and returns ``[t, heads*dim]``. When both kinds are present the
    causal and the bidirectional tokens are gathered, attended separately and scattered
    back to their places (segments never attend across, so nothing is lost).
    """
    out = None
    for index, plain, bidirectional in params.kind_groups():
        if index is None:
            return kernel(query, key, value, plain, bidirectional)
        part = kernel(
            query.index_select(0, index),
            key.index_select(0, index),
            value.index_select(0, index),
            plain,
            bidirectional,
        ).reshape(index.numel(), -1)
        if out is None:
            out = part.new_zeros(query.shape[0], part.shape[1])
        out = out.index_copy(0, index, part)
    return out


@functools.cache
def te_packed_attention() -> type:
    """``TEDotProductAttention`` taking :class:`SegmentedPackedSeqParams` (needs TE).

    A subclass, so its checkpoint keys (``core_attention._extra_state``) are TE's own.
    """
    from megatron.core.extensions.transformer_engine import TEDotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    class PackedTEDotProductAttention(TEDotProductAttention):
        """TE flash/fused attention per segment kind: padding_causal or padding (THD)."""

        def forward(
            self,
            query,
            key,
            value,
            attention_mask,
            attn_mask_type=None,
            attention_bias=None,
            packed_seq_params=None,
            **kwargs,
        ):
            if not isinstance(packed_seq_params, SegmentedPackedSeqParams):
                return super().forward(
                    query,
                    key,
                    value,
                    attention_mask,
                    attn_mask_type,
                    attention_bias,
                    packed_seq_params,
                    **kwargs,
                )

            def kernel(q, k, v, params, bidirectional):
                # TE turns causal -> padding_causal and no_mask -> padding for THD
                mask_type = AttnMaskType.no_mask if bidirectional else AttnMaskType.causal
                return super(PackedTEDotProductAttention, self).forward(
                    q, k, v, None, mask_type, attention_bias, params, **kwargs
                )

            return attend_by_kind(query, key, value, packed_seq_params, kernel)

    return PackedTEDotProductAttention
