"""Megatron-core ``torch_dist`` checkpoints built from full tensors, and read back by groups.

The checkpoint holds exactly the keys and global shapes that
``GPTModel.sharded_state_dict()`` of megatron-core 0.16 produces, so
``dist_checkpointing.load`` reads it into a GPTModel at any TP/PP:

* decoder-layer tensors are stacked along a leading layer axis
  (``decoder.layers.<name>`` with global shape ``(num_layers, ...)``, one
  shard per layer, as megatron's ``sharded_offsets`` do);
* the layer norms take TransformerEngine's names
  (``self_attention.linear_qkv.layer_norm_weight``,
  ``mlp.linear_fc1.layer_norm_weight``), which the local layer spec maps to;
* ``linear_fc1`` is stored as the global ``[gate; up]`` tensor, the layout
  megatron's SwiGLU shard factory writes (gate rows first, then up rows);
* with tied embeddings only ``embedding.word_embeddings.weight`` is stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")
CKPT_NAMES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
"""Layer-local megatron names whose checkpoint key is TransformerEngine's."""

MEGATRON_CHECKPOINT_CONFIG = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}
"""megatron-core's ``metadata.json`` for a torch_dist checkpoint."""


def checkpoint_key(name: str) -> tuple[str, int | None]:
    """(checkpoint key, layer index or None) of a full-model megatron tensor name."""
    m = _LAYER_RE.match(name)
    if not m:
        return name, None
    rest = m.group(2)
    return f"decoder.layers.{CKPT_NAMES.get(rest, rest)}", int(m.group(1))


def sharded_tensor(name: str, data: torch.Tensor, num_layers: int):
    """megatron-core ShardedTensor for a full-model tensor (TP=1/PP=1 view)."""
    from megatron.core.dist_checkpointing import ShardedTensor

    key, layer = checkpoint_key(name)
    if layer is None:
        return ShardedTensor.from_rank_offsets(key, data, replica_id=0)
    return ShardedTensor.from_rank_offsets(
        key, data, (0, layer, num_layers), replica_id=0, prepend_axis_num=1
    )


@contextlib.contextmanager
def single_process_group(megatron_on_cpu: bool = False) -> Iterator[None]:
    """A one-rank gloo process group when none exists (torch_dist needs one).

    Args:
        megatron_on_cpu: also enable megatron_lang's CPU support for megatron-core
            (needed to build models and for megatron-core's own save, which calls
            ``torch.cuda.synchronize``; not to read checkpoints).
    """
    import torch.distributed as dist

    if megatron_on_cpu and not torch.cuda.is_available():
        from megatron_lang.platform import cpu_support

        cpu_support.enable()
    if dist.is_initialized():
        yield
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def save_checkpoint(tensors: dict[str, torch.Tensor], ckpt_dir: Path, num_layers: int) -> None:
    """Save full-model megatron tensors with megatron-core's own ``dist_checkpointing.save``.

    Holds all tensors in memory; :func:`save_checkpoint_streamed` writes the
    same checkpoint one tensor at a time.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    sharded = {name: sharded_tensor(name, t, num_layers) for name, t in tensors.items()}
    strategy = TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=1)
    # megatron-core's save synchronises CUDA (filesystem_async.preload_tensors)
    with single_process_group(megatron_on_cpu=True):
        dist_checkpointing.save(sharded, str(ckpt_dir), sharded_strategy=strategy)


def save_checkpoint_streamed(
    specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    ckpt_dir: Path,
    num_layers: int,
) -> None:
    """Write the ``torch_dist`` checkpoint of :func:`save_checkpoint`, producing tensors on demand.

    ``specs`` gives each full-model tensor's shape and dtype; ``produce(name)``
    makes the tensor when the writer reaches it (e.g. reads and fuses the HF
    tensors), so at most one tensor is in memory.  The files are those
    megatron-core's torch_dist strategy writes at TP=1/PP=1: a PyTorch DCP
    checkpoint (one chunk per layer of each stacked tensor), ``metadata.json``
    and ``common.pt``.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardMetadata
    from torch.distributed._shard.sharded_tensor.metadata import (
        ShardedTensorMetadata,
        TensorProperties,
    )

    groups: dict[str, list[tuple[list[int], list[int], str]]] = {}
    global_shapes: dict[str, tuple[list[int], torch.dtype]] = {}
    where: dict[tuple[str, tuple[int, ...]], str] = {}
    for name, (shape, dtype) in specs.items():
        key, layer = checkpoint_key(name)
        if layer is None:
            offsets, size, global_shape = [0] * len(shape), list(shape), list(shape)
        else:
            offsets, size = [layer] + [0] * len(shape), [1, *shape]
            global_shape = [num_layers, *shape]
        groups.setdefault(key, []).append((offsets, size, name))
        global_shapes[key] = (global_shape, dtype)
        where[(key, tuple(offsets))] = name
    with single_process_group():
        state = {}
        for key, members in groups.items():
            global_shape, dtype = global_shapes[key]
            # meta tensors: shapes only, the data comes from produce() while writing
            shards = [
                Shard(
                    torch.empty(size, dtype=dtype, device="meta"),
                    ShardMetadata(offsets, size, "rank:0/meta"),
                )
                for offsets, size, _ in members
            ]
            meta = ShardedTensorMetadata(
                [s.metadata for s in shards],
                torch.Size(global_shape),
                TensorProperties(dtype=dtype),
            )
            state[key] = ShardedTensor._init_from_local_shards_and_global_metadata(shards, meta)
        writer = dcp.FileSystemWriter(str(ckpt_dir), single_file_per_rank=True, thread_count=1)
        dcp.save(state, storage_writer=writer, planner=_StreamingSavePlanner(where, specs, produce))
    # what megatron-core's save_config(CheckpointingConfig("torch_dist")) writes; written
    # here so that conversion does not import megatron-core
    (Path(ckpt_dir) / "metadata.json").write_text(json.dumps(MEGATRON_CHECKPOINT_CONFIG))
    torch.save({}, Path(ckpt_dir) / "common.pt")  # the (empty) common state dict


class _StreamingSavePlanner:
    """DCP save planner whose tensor data is produced when the writer asks for it."""

    def __new__(cls, where: dict, specs: dict, produce: Callable[[str], torch.Tensor]):
        from torch.distributed.checkpoint import DefaultSavePlanner
        from torch.distributed.checkpoint.planner import WriteItemType

        class Planner(DefaultSavePlanner):
            def resolve_data(self, write_item):
                if write_item.type == WriteItemType.BYTE_IO:
                    return super().resolve_data(write_item)
                idx = write_item.index
                name = where[(idx.fqn, tuple(idx.offset))]
                t = produce(name)
                if tuple(t.shape) != tuple(specs[name][0]) or t.dtype != specs[name][1]:
                    raise ValueError(
                        f"tensor {name!r}: produced {tuple(t.shape)} {t.dtype}, "
                        f"planned {specs[name][0]} {specs[name][1]}"
                    )
                return t.reshape(tuple(write_item.tensor_data.chunk.sizes)).contiguous()

        return Planner(flatten_state_dict=False, flatten_sharded_tensors=False)


def load_tensors(
    ckpt_dir: Path,
    specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
    num_layers: int,
) -> dict[str, torch.Tensor]:
    """Read some full-model tensors (name -> (shape, dtype)) from a ``torch_dist`` checkpoint.

    Only the checkpoint chunks that overlap the requested tensors are read
    (e.g. one layer's slice of the stacked layer tensors), whatever TP/PP the
    checkpoint was saved with.  Needs no process group.

    Raises:
        ConversionError: a tensor is missing, has another global shape, or is
            not fully covered by the checkpoint's chunks.
    """
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(ckpt_dir))
    regions: dict[str, tuple[str, tuple[int, ...]]] = {}
    dest: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in specs.items():
        key, layer = checkpoint_key(name)
        if layer is None:
            regions[name] = (key, (0,) * len(shape))
            dest[name] = torch.empty(shape, dtype=dtype)
        else:
            regions[name] = (key, (layer,) + (0,) * len(shape))
            dest[name] = torch.empty((1, *shape), dtype=dtype)
    metadata = reader.read_metadata()
    items = []
    for name, (key, offset) in regions.items():
        items += _region_reads(name, key, offset, tuple(dest[name].shape), metadata, num_layers)
    planner = _RegionLoadPlanner(items)
    dcp.load(dest, storage_reader=reader, planner=planner, no_dist=True)
    return {name: t[0] if t.dim() > len(specs[name][0]) else t for name, t in dest.items()}


def _region_reads(name: str, key: str, offset: tuple, shape: tuple, meta, num_layers: int) -> list:
    from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata
    from torch.distributed.checkpoint.planner import LoadItemType, ReadItem

    from megatron_lang.conversion.mapping import ConversionError

    md = meta.state_dict_metadata.get(key)
    layered = checkpoint_key(name)[1] is not None
    expected = ((num_layers,) + tuple(shape[1:])) if layered else tuple(shape)
    if not isinstance(md, TensorStorageMetadata):
        raise ConversionError(
            f"checkpoint has no tensor {key!r} (expected global shape {expected})"
        )
    if tuple(md.size) != expected:
        raise ConversionError(
            f"tensor {key!r}: expected global shape {expected}, found {tuple(md.size)} in checkpoint"
        )
    reads, covered = [], 0
    for chunk in md.chunks:
        lo = [max(o, c) for o, c in zip(offset, chunk.offsets)]
        hi = [min(o + s, c + n) for o, s, c, n in zip(offset, shape, chunk.offsets, chunk.sizes)]
        if any(h <= lo_ for lo_, h in zip(lo, hi)):
            continue
        lengths = [h - lo_ for lo_, h in zip(lo, hi)]
        covered += int(torch.Size(lengths).numel())
        reads.append(
            ReadItem(
                type=LoadItemType.TENSOR,
                dest_index=MetadataIndex(name),
                dest_offsets=torch.Size([a - o for a, o in zip(lo, offset)]),
                storage_index=MetadataIndex(key, chunk.offsets),
                storage_offsets=torch.Size([a - c for a, c in zip(lo, chunk.offsets)]),
                lengths=torch.Size(lengths),
            )
        )
    if covered != torch.Size(shape).numel():
        raise ConversionError(
            f"tensor {key!r}: checkpoint chunks do not cover region {offset}+{shape}"
        )
    return reads


class _RegionLoadPlanner:
    """DCP load planner that reads precomputed regions of checkpoint tensors."""

    def __new__(cls, items: list):
        from torch.distributed.checkpoint import DefaultLoadPlanner
        from torch.distributed.checkpoint.planner import LoadPlan

        class Planner(DefaultLoadPlanner):
            def create_local_plan(self) -> LoadPlan:
                return LoadPlan(items)

        return Planner(flatten_state_dict=False, flatten_sharded_tensors=False)


def is_torch_dist_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a megatron-core distributed checkpoint."""
    return (Path(path) / "metadata.json").is_file()
