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
- :class:`PackedDotProductAttention`: PyTorch's ``scaled_dot_product_attention`` per
  segment (flash / memory-efficient kernels on GPUs, no ``[S, S]`` scores tensor for the
  whole sample) for installs without TransformerEngine and for CPU. Without packed params
  it is plain attention with the layer's causal mask or a given dense mask.

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
    """megatron-core's THD ``PackedSeqParams`` plus the attention kind of every segment."""

    bidirectional: list[bool] = field(default_factory=list)
    """Per segment: attends both ways (MNTP) instead of causally."""
    cu_seqlens_host: list[int] = field(default_factory=list)
    """``cu_seqlens`` as Python ints (segment loops without a device sync)."""
    _groups: dict = field(default_factory=dict, repr=False)

    def kind_groups(self, device: torch.device) -> list[tuple[torch.Tensor | None, Any, bool]]:
        """``[(token index or None, plain PackedSeqParams, bidirectional)]``, one per kind.

        One entry (index None) when all segments are of one kind; else the causal and the
        bidirectional segments, each re-packed over its own tokens. Cached per device.
        """
        key = str(device)
        if key not in self._groups:
            self._groups[key] = self._split(device)
        return self._groups[key]

    def _split(self, device: torch.device) -> list:
        kinds = sorted(set(self.bidirectional))
        plain = {
            "qkv_format": "thd",
            "cu_seqlens_q": self.cu_seqlens_q,
            "cu_seqlens_kv": self.cu_seqlens_kv,
            "max_seqlen_q": self.max_seqlen_q,
            "max_seqlen_kv": self.max_seqlen_kv,
        }
        if len(kinds) <= 1:
            return [(None, PackedSeqParams(**plain), bool(kinds and kinds[0]))]
        groups = []
        cu = self.cu_seqlens_host
        for kind in kinds:
            spans = [
                (cu[i], cu[i + 1]) for i, bidir in enumerate(self.bidirectional) if bidir == kind
            ]
            index = torch.cat([torch.arange(a, b) for a, b in spans]).to(device)
            lengths = torch.tensor([0] + [b - a for a, b in spans])
            sub_cu = lengths.cumsum(0).to(torch.int32).to(device)
            longest = max(b - a for a, b in spans)
            params = PackedSeqParams(
                qkv_format="thd",
                cu_seqlens_q=sub_cu,
                cu_seqlens_kv=sub_cu,
                max_seqlen_q=longest,
                max_seqlen_kv=longest,
            )
            groups.append((index, params, kind))
        return groups


def packed_seq_params(batch: dict[str, Any]) -> SegmentedPackedSeqParams:
    """The packed params of a micro-batch from :func:`~megatron_lang.data.packing.pack_microbatch`.

    ``cu_seqlens`` is used on the batch's device (the GPU once moved); the segment loops
    use the batch's host copies (``segments_host``).
    """
    cu = batch["cu_seqlens"]
    cu_host, bidirectional = batch["segments_host"]  # host lists: no device sync
    longest = int(batch["max_seqlen"])
    return SegmentedPackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
        bidirectional=bidirectional,
        cu_seqlens_host=cu_host,
    )


class PackedDotProductAttention(MegatronModule):
    """Core attention over ``torch.nn.functional.scaled_dot_product_attention``.

    Same constructor and ``forward`` as megatron-core's core attentions. With
    :class:`SegmentedPackedSeqParams` (THD: ``query [t, heads, dim]``) it attends per
    segment, causally or bidirectionally; without (``[s, b, heads, dim]``) it applies the
    given dense mask (True = masked out) or, with none, the layer's causal mask. Grouped
    query attention is handled by SDPA (``enable_gqa``), no key/value copies.
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
        kwargs = dict(
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=self.heads != self.groups,
        )
        if dropout and not self.config.sequence_parallel:
            from megatron.core import tensor_parallel

            with tensor_parallel.get_cuda_rng_tracker().fork():
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

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
            cu = packed_seq_params.cu_seqlens_host
            outs = []
            for i, bidirectional in enumerate(packed_seq_params.bidirectional):
                a, b = cu[i], cu[i + 1]
                q, k, v = (x[a:b].transpose(0, 1) for x in (query, key, value))  # [heads, l, d]
                outs.append(self._sdpa(q, k, v, causal=not bidirectional).transpose(0, 1))
            return torch.cat(outs).reshape(query.shape[0], self.heads * self.head_dim)
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
    for index, plain, bidirectional in params.kind_groups(query.device):
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
