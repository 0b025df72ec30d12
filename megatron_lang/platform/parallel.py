"""Model-parallel layout: validation with clear errors, then megatron-core's groups.

The data-parallel size is derived: ``DP = world_size / (TP * PP * CP)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


class ParallelConfigError(ValueError):
    """A parallel layout that cannot work for this world size or model shape."""


@dataclass
class ParallelLayout:
    """How the model and the data are split over ranks."""

    tensor_parallel: int = 1
    """TP: ranks that split each layer's weights (must divide attention heads and KV groups)."""
    pipeline_parallel: int = 1
    """PP: pipeline stages (must divide the layer count)."""
    virtual_pipeline_parallel: int | None = None
    """Model chunks per pipeline stage for the interleaved schedule (None = not interleaved)."""
    context_parallel: int = 1
    """CP: ranks that split each sequence (sequence length must divide by 2*CP)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (only meaningful with TP > 1)."""

    def __post_init__(self) -> None:
        # VPP=1 is no interleaving: megatron-core gets None and runs the 1F1B schedule,
        # so every option keyed on "interleaved" must see None too (a VPP of 1 that
        # turned on overlap_p2p_comm crashed the non-interleaved schedule on CUDA)
        if self.virtual_pipeline_parallel == 1:
            self.virtual_pipeline_parallel = None

    def interleaved(self) -> bool:
        """More than one model chunk per pipeline stage (megatron-core's interleaved 1F1B)."""
        return (self.virtual_pipeline_parallel or 1) > 1

    def model_parallel_size(self) -> int:
        """TP * PP * CP: ranks holding one replica of the model."""
        return self.tensor_parallel * self.pipeline_parallel * self.context_parallel

    def data_parallel_size(self, world_size: int) -> int:
        """DP derived from the world size (validate first)."""
        return world_size // self.model_parallel_size()

    def describe(self, world_size: int) -> str:
        """'TP=2 x PP=1 x CP=1 x DP=2 (4 ranks)'."""
        vpp = f" (VPP={self.virtual_pipeline_parallel})" if self.virtual_pipeline_parallel else ""
        return (
            f"TP={self.tensor_parallel} x PP={self.pipeline_parallel}{vpp} x "
            f"CP={self.context_parallel} x DP={self.data_parallel_size(world_size)} ({world_size} ranks)"
        )


def validate_layout(
    layout: ParallelLayout,
    world_size: int,
    num_layers: int | None = None,
    num_attention_heads: int | None = None,
    num_query_groups: int | None = None,
    seq_length: int | None = None,
) -> None:
    """Check a layout against the world size and the model's shape.

    Raises:
        ParallelConfigError: naming the values and the rule that failed.
    """
    tp, pp, cp = layout.tensor_parallel, layout.pipeline_parallel, layout.context_parallel
    vpp = layout.virtual_pipeline_parallel
    for name, value in (("TP", tp), ("PP", pp), ("CP", cp), ("world size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ParallelConfigError(f"{name} must be a positive integer, got {value!r}")
    mp = tp * pp * cp
    if world_size % mp:
        raise ParallelConfigError(
            f"world size {world_size} is not divisible by TP x PP x CP = {tp} x {pp} x {cp} = {mp}: "
            f"the data-parallel size must be a whole number"
        )
    if num_attention_heads is not None and num_attention_heads % tp:
        raise ParallelConfigError(
            f"TP={tp} does not divide num_attention_heads={num_attention_heads}: "
            f"each tensor-parallel rank must hold whole attention heads"
        )
    if num_query_groups is not None and num_query_groups % tp:
        raise ParallelConfigError(
            f"TP={tp} does not divide num_query_groups (KV heads)={num_query_groups}: "
            f"each tensor-parallel rank must hold whole KV groups"
        )
    if num_layers is not None:
        if pp > num_layers:
            raise ParallelConfigError(
                f"PP={pp} is larger than num_layers={num_layers}: every pipeline stage needs a layer"
            )
        if num_layers % pp:
            raise ParallelConfigError(
                f"PP={pp} does not divide num_layers={num_layers}: stages must hold equal layer counts"
            )
    if vpp is not None:
        if vpp < 1:
            raise ParallelConfigError(f"virtual PP must be a positive integer, got {vpp!r}")
        if vpp > 1 and pp < 2:
            raise ParallelConfigError(
                f"virtual PP={vpp} needs PP >= 2 (got PP={pp}): interleaving splits pipeline stages"
            )
        if num_layers is not None and num_layers % (pp * vpp):
            raise ParallelConfigError(
                f"PP x VPP = {pp} x {vpp} does not divide num_layers={num_layers}"
            )
    if seq_length is not None and cp > 1 and seq_length % (2 * cp):
        raise ParallelConfigError(
            f"sequence length {seq_length} is not divisible by 2 x CP = {2 * cp}: "
            f"context parallelism splits each sequence into 2*CP chunks"
        )
    if layout.sequence_parallel and tp == 1:
        raise ParallelConfigError("sequence_parallel needs TP > 1 (got TP=1)")


def initialize_model_parallel(
    layout: ParallelLayout,
    num_layers: int | None = None,
    num_attention_heads: int | None = None,
    num_query_groups: int | None = None,
    seq_length: int | None = None,
) -> None:
    """Validate the layout against the running job and create megatron-core's groups.

    ``torch.distributed`` must already be initialised (see
    :func:`megatron_lang.platform.distributed.init_distributed`).
    """
    import torch.distributed as dist
    from megatron.core import parallel_state

    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call init_distributed() first")
    world_size = dist.get_world_size()
    validate_layout(
        layout, world_size, num_layers, num_attention_heads, num_query_groups, seq_length
    )
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    vpp = layout.virtual_pipeline_parallel
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor_parallel,
        pipeline_model_parallel_size=layout.pipeline_parallel,
        virtual_pipeline_model_parallel_size=vpp if layout.interleaved() else None,
        context_parallel_size=layout.context_parallel,
    )
    log.info("parallel layout: %s", layout.describe(world_size))
