"""Full (unsharded) model state dicts <-> this rank's TP/PP shard of a GPTModel.

A *full* state dict uses the names of a TP=1, PP=1 GPTModel with global layer
indices (``decoder.layers.{i}.…``).  megatron-core marks tensor-parallel
parameters with ``tensor_model_parallel`` and ``partition_dim``; those drive
the slicing, with one exception that megatron-core handles in its sharded
state dict: the fused SwiGLU ``linear_fc1`` holds ``[gate; up]``, and each TP
rank holds ``[gate_r; up_r]``, not a contiguous slice of the fused tensor.

Meant for small models, tests and conversion checks: the full tensors are held
in memory.  Large checkpoints go through ``dist_checkpointing``.
"""

from __future__ import annotations

import re

import torch

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")
_GLU_FC1 = "mlp.linear_fc1.weight"


def _tp():
    from megatron.core import parallel_state

    return (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_group(),
    )


def global_param_names(model: torch.nn.Module) -> dict[str, str]:
    """Map each local parameter name to its full (global-layer) name."""
    offsets: dict[int, int] = {}
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        for local_idx, layer in enumerate(decoder.layers):
            offsets[local_idx] = layer.layer_number - 1
    names = {}
    for name, _ in model.named_parameters():
        m = _LAYER_RE.match(name)
        names[name] = f"decoder.layers.{offsets[int(m.group(1))]}.{m.group(2)}" if m else name
    return names


def _is_glu_fc1(name: str, model: torch.nn.Module) -> bool:
    return name.endswith(_GLU_FC1) and bool(getattr(model.config, "gated_linear_unit", False))


def _shard(
    full: torch.Tensor, param: torch.nn.Parameter, glu: bool, rank: int, size: int
) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False) or size == 1:
        return full
    dim = param.partition_dim
    if glu:
        gate, up = torch.chunk(full, 2, dim=dim)
        return torch.cat(
            [torch.chunk(gate, size, dim)[rank], torch.chunk(up, size, dim)[rank]], dim
        )
    return torch.chunk(full, size, dim=dim)[rank]


def load_full_state_dict(model: torch.nn.Module, full_sd: dict[str, torch.Tensor]) -> None:
    """Copy the slices of ``full_sd`` that belong to this rank into ``model``.

    Raises:
        KeyError: a parameter of the model has no tensor in ``full_sd``.
        ValueError: a slice's shape differs from the parameter's.
    """
    rank, size, _ = _tp()
    names = global_param_names(model)
    with torch.no_grad():
        for local, param in model.named_parameters():
            key = names[local]
            if key not in full_sd and key == "output_layer.weight":
                key = "embedding.word_embeddings.weight"  # tied embeddings on the last stage
            if key not in full_sd:
                raise KeyError(f"full state dict has no tensor {key!r} (model parameter {local!r})")
            piece = _shard(full_sd[key], param, _is_glu_fc1(local, model), rank, size)
            if piece.shape != param.shape:
                raise ValueError(
                    f"tensor {key!r}: shard shape {tuple(piece.shape)} != parameter shape "
                    f"{tuple(param.shape)} (TP rank {rank} of {size})"
                )
            param.copy_(piece)


def gather_full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict assembled from all TP and PP ranks (returned on every rank)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    rank, size, group = _tp()
    names = global_param_names(model)
    tied = bool(getattr(model, "share_embeddings_and_output_weights", False))
    local_full: dict[str, torch.Tensor] = {}
    for local, param in model.named_parameters():
        if tied and names[local] == "output_layer.weight":
            continue  # the last stage's copy of the tied embedding
        t = param.detach()
        if getattr(param, "tensor_model_parallel", False) and size > 1:
            parts = [torch.empty_like(t) for _ in range(size)]
            dist.all_gather(parts, t.contiguous(), group=group)
            dim = param.partition_dim
            if _is_glu_fc1(local, model):
                halves = [torch.chunk(p, 2, dim) for p in parts]
                t = torch.cat(
                    [
                        torch.cat([h[0] for h in halves], dim),
                        torch.cat([h[1] for h in halves], dim),
                    ],
                    dim,
                )
            else:
                t = torch.cat(parts, dim)
        local_full[names[local]] = t.clone()
    pp_size = parallel_state.get_pipeline_model_parallel_world_size()
    if pp_size == 1:
        return local_full
    gathered: list[dict[str, torch.Tensor] | None] = [None] * pp_size
    dist.all_gather_object(
        gathered, local_full, group=parallel_state.get_pipeline_model_parallel_group()
    )
    full: dict[str, torch.Tensor] = {}
    for part in gathered:
        for k, v in (part or {}).items():
            full.setdefault(k, v)
    return full
