"""LoRA adapters on megatron-core's tensor-parallel linear layers.

Each adapted layer ``y = W x`` becomes ``y = W x + (alpha / r) * B (A dropout(x))``.
The adapter is a sibling module of the layer it adapts (``linear_qkv_lora`` next
to ``linear_qkv``), so the base layer's parameter and checkpoint names do not
change, and a forward hook on the base layer adds the update to its output.

Tensor parallelism follows the base layer:

* column-parallel base (``linear_qkv``, ``linear_fc1``, ``output_layer``): the
  input is replicated over TP; ``A`` ``[r, in]`` is replicated and ``B``
  ``[out/TP, r]`` is sharded like the base's output rows. ``h = A x`` is computed
  on every rank and passed through ``copy_to_tensor_model_parallel_region``
  (identity forward, all-reduce backward): each rank's ``dh`` is only its part
  of ``B^T dy``, so the all-reduce makes ``dA`` and ``dx`` whole and equal on all ranks.
* row-parallel base (``linear_proj``, ``linear_fc2``): the input is sharded on
  its features; ``A`` ``[r, in/TP]`` is sharded like the base's columns and
  ``B`` ``[out, r]`` is replicated. ``h = reduce_from_tensor_model_parallel_region(A_t x_t)``
  (all-reduce of the small ``[.., r]`` partial products forward, identity
  backward); then ``B h`` is the same on every rank, like the base's reduced output.

The fused SwiGLU ``linear_fc1`` holds ``[gate_t; up_t]`` on TP rank ``t``; its
``B`` is laid out the same way and checkpointed with megatron-core's SwiGLU
factory, so the saved global ``B`` is ``[B_gate; B_up]`` at any TP size.

Initialisation does not draw from any process RNG: the full ``A`` of a layer is
drawn from a generator seeded by the job's seed and the layer's global name,
then sliced for this rank, so ``A`` is identical for every TP/PP layout and
adding adapters leaves the base model's random streams untouched. ``B`` is zero.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict
from typing import Any

import torch

from megatron_lang.config import JobConfig, LoraConfig
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

COLUMN_TARGETS = ("linear_qkv", "linear_fc1", "output_layer")
"""Adaptable column-parallel layers."""
ROW_TARGETS = ("linear_proj", "linear_fc2")
"""Adaptable row-parallel layers."""
TARGETS = COLUMN_TARGETS + ROW_TARGETS
SUFFIX = "_lora"
"""Adapter module name = target name + this suffix (``linear_qkv_lora``)."""
PARAM_A, PARAM_B = "lora_A", "lora_B"


class LoraError(ValueError):
    """A LoRA configuration this model or layout cannot use (the message names the option)."""


def check_config(cfg: JobConfig, use_te: bool, tied_embeddings: bool) -> None:
    """Validate ``cfg.lora`` against the job.

    Raises:
        LoraError: bad rank/alpha/dropout, unknown or unsupported targets, or a
            layout the adapters do not support (sequence parallelism, the
            TransformerEngine spec whose linears fuse the input norm).
    """
    lc = cfg.lora
    if not lc.enabled:
        return
    if lc.rank < 1:
        raise LoraError(f"lora.rank={lc.rank}: must be >= 1")
    if lc.alpha <= 0:
        raise LoraError(f"lora.alpha={lc.alpha}: must be > 0")
    if not 0.0 <= lc.dropout < 1.0:
        raise LoraError(f"lora.dropout={lc.dropout}: must be in [0, 1)")
    if not lc.target_modules:
        raise LoraError("lora.target_modules is empty: nothing would be adapted")
    unknown = sorted(set(lc.target_modules) - set(TARGETS))
    if unknown:
        raise LoraError(f"lora.target_modules: unknown {unknown}; choose from {list(TARGETS)}")
    if "output_layer" in lc.target_modules and tied_embeddings:
        raise LoraError(
            "lora.target_modules has output_layer but the model ties input and output "
            "embeddings; a merged export could not represent the update"
        )
    if cfg.parallel.sequence_parallel:
        raise LoraError("lora with parallel.sequence_parallel is not supported")
    if use_te:
        raise LoraError(
            "lora needs the local layer spec (TransformerEngine's linears fuse the input "
            "norm, which the adapter would have to see); set model.transformer_engine=false"
        )


def layer_seed(seed: int, name: str) -> int:
    """Seed of the generator that draws the full ``A`` of the adapter named ``name``."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def initial_a(seed: int, name: str, rank: int, in_features: int) -> torch.Tensor:
    """The full (unsharded) initial ``A`` ``[rank, in_features]`` in fp32.

    Uniform in ``±1/sqrt(in_features)`` (Kaiming-uniform with ``a=sqrt(5)``, as
    ``torch.nn.Linear`` and PEFT initialise ``A``).
    """
    gen = torch.Generator().manual_seed(layer_seed(seed, name))
    bound = 1.0 / math.sqrt(in_features)
    return torch.empty(rank, in_features).uniform_(-bound, bound, generator=gen)


class LoraAdapter(torch.nn.Module):
    """The low-rank update of one tensor-parallel linear layer (this rank's shards).

    Args:
        name: global name of the adapted layer (``decoder.layers.3.mlp.linear_fc1``).
        parallel: ``"column"`` or ``"row"``, as the base layer.
        in_features / out_features: the base layer's full (unsharded) sizes.
        lora: rank, alpha, dropout.
        seed: the job's seed (with ``name`` it fixes the initial ``A``).
        dtype: parameter dtype (the model's).
        glu: the base is the fused SwiGLU ``linear_fc1`` (``B`` checkpointed with
            megatron-core's SwiGLU factory).
    """

    def __init__(
        self,
        name: str,
        parallel: str,
        in_features: int,
        out_features: int,
        lora: LoraConfig,
        seed: int,
        dtype: torch.dtype,
        glu: bool = False,
    ):
        super().__init__()
        from megatron.core import parallel_state as ps
        from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

        tp_rank, tp = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
        if parallel not in ("column", "row"):
            raise ValueError(f"parallel={parallel!r}: 'column' or 'row'")
        split = in_features if parallel == "row" else out_features
        if split % tp:
            raise LoraError(f"{name}: {split} features do not split over TP={tp}")
        self.name, self.parallel, self.glu = name, parallel, glu
        self.rank, self.scaling = lora.rank, lora.alpha / lora.rank
        self.dropout = torch.nn.Dropout(lora.dropout) if lora.dropout > 0 else None
        a_full_RI = initial_a(seed, name, lora.rank, in_features)
        if parallel == "column":
            a_RI = a_full_RI
            b_OR = torch.zeros(out_features // tp, lora.rank)
        else:
            a_RI = torch.chunk(a_full_RI, tp, dim=1)[tp_rank]
            b_OR = torch.zeros(out_features, lora.rank)
        self.lora_A = torch.nn.Parameter(a_RI.to(dtype).contiguous())
        self.lora_B = torch.nn.Parameter(b_OR.to(dtype))
        # the sharded one carries its TP axis; the replicated one is counted once in the grad norm
        row = parallel == "row"
        set_tensor_model_parallel_attributes(self.lora_A, row, 1 if row else -1, 1)
        set_tensor_model_parallel_attributes(self.lora_B, not row, -1 if row else 0, 1)

    def extra_repr(self) -> str:
        return f"{self.name}, {self.parallel}, r={self.rank}, scaling={self.scaling:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update ``scaling * B A dropout(x)`` for this rank's part of the base output."""
        from megatron.core import tensor_parallel as tpl

        if self.parallel == "column":
            if self.dropout is not None and self.training:
                x = self.dropout(x)  # replicated input: the default generator, same on all TP ranks
            h = tpl.copy_to_tensor_model_parallel_region(torch.nn.functional.linear(x, self.lora_A))
        else:
            if self.dropout is not None and self.training:
                with tpl.get_cuda_rng_tracker().fork():  # sharded input: per-TP-rank masks
                    x = self.dropout(x)
            h = tpl.reduce_from_tensor_model_parallel_region(
                torch.nn.functional.linear(x, self.lora_A)
            )
        return torch.nn.functional.linear(h, self.lora_B) * self.scaling

    def sharded_state_dict(
        self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None
    ) -> dict[str, Any]:
        """ShardedTensors with the TP axis of each sharded parameter (for dist_checkpointing)."""
        from megatron.core.transformer.mlp import apply_swiglu_sharded_factory
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        axis = {PARAM_B: 0} if self.parallel == "column" else {PARAM_A: 1}
        sd = make_sharded_tensors_for_checkpoint(
            self.state_dict(prefix="", keep_vars=True), prefix, axis, sharded_offsets
        )
        if self.glu:
            key = f"{prefix}{PARAM_B}"
            singleton = (metadata or {}).get("singleton_local_shards", False)
            sd[key] = apply_swiglu_sharded_factory(sd[key], sharded_offsets, singleton)
        return sd


def _add_update(adapter: LoraAdapter, module, args, kwargs, output):
    """Forward hook of the base layer: add the adapter's update to its output."""
    x = args[0] if args else kwargs["input_"]
    out, bias = output
    delta = adapter(x)
    if delta.shape[-1] != out.shape[-1]:  # output layer asked to gather its output
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        delta = gather_from_tensor_model_parallel_region(delta)
    return out + delta.to(out.dtype), bias


def _sizes(model: torch.nn.Module, target: str) -> tuple[int, int]:
    c = model.config
    head_dim = c.kv_channels
    q, kv = c.num_attention_heads * head_dim, c.num_query_groups * head_dim
    ffn = c.ffn_hidden_size
    return {
        "linear_qkv": (c.hidden_size, q + 2 * kv),
        "linear_proj": (q, c.hidden_size),
        "linear_fc1": (c.hidden_size, ffn * (2 if c.gated_linear_unit else 1)),
        "linear_fc2": (ffn, c.hidden_size),
        "output_layer": (c.hidden_size, getattr(model, "vocab_size", 0)),
    }[target]


def _attach(parent, target: str, name: str, model, lora: LoraConfig, seed: int) -> LoraAdapter:
    base = getattr(parent, target)
    if hasattr(base, "layer_norm_weight"):
        raise LoraError(f"{name}: the layer fuses its input norm (TransformerEngine spec)")
    in_f, out_f = _sizes(model, target)
    parallel = "column" if target in COLUMN_TARGETS else "row"
    glu = target == "linear_fc1" and bool(model.config.gated_linear_unit)
    adapter = LoraAdapter(
        name, parallel, in_f, out_f, lora, seed, model.config.params_dtype, glu=glu
    )
    w = getattr(base, "weight", None)
    if w is not None:  # the base shard's shape must agree with the adapter's
        want = (adapter.lora_B.shape[0], adapter.lora_A.shape[1])
        if tuple(w.shape) != want:
            raise LoraError(f"{name}: base weight shard {tuple(w.shape)}, adapter expects {want}")
    parent.add_module(target + SUFFIX, adapter)
    base.register_forward_hook(functools.partial(_add_update, adapter), with_kwargs=True)
    return adapter


def apply_lora(model: torch.nn.Module, lora: LoraConfig, seed: int) -> list[str]:
    """Add adapters to one (unwrapped) GPTModel chunk in place; return the adapted layers' names.

    Names are global (pipeline layer offsets applied). Call before the model is
    moved to its device and wrapped in DDP.

    Raises:
        LoraError: a target cannot be adapted (e.g. TE layers with a fused norm).
    """
    targets = set(lora.target_modules)
    if model.share_embeddings_and_output_weights and "output_layer" in targets:
        raise LoraError("lora target output_layer needs untied input/output embeddings")
    names = []
    for layer in model.decoder.layers:
        i = layer.layer_number - 1
        for parent, part, own in (
            (layer.self_attention, "self_attention", ("linear_qkv", "linear_proj")),
            (layer.mlp, "mlp", ("linear_fc1", "linear_fc2")),
        ):
            for t in own:
                if t in targets:
                    name = f"decoder.layers.{i}.{part}.{t}"
                    _attach(parent, t, name, model, lora, seed)
                    names.append(name)
    if "output_layer" in targets and getattr(model, "post_process", False):
        _attach(model, "output_layer", "output_layer", model, lora, seed)
        names.append("output_layer")
    return names


def is_adapter_name(name: str) -> bool:
    """True for an adapter parameter's (or checkpoint key's) name."""
    return name.endswith((f"{SUFFIX}.{PARAM_A}", f"{SUFFIX}.{PARAM_B}"))


def metadata(lora: LoraConfig) -> dict[str, Any]:
    """What an export needs to know about a run's adapters (saved in the checkpoint's metadata)."""
    return {k: v for k, v in asdict(lora).items() if k != "enabled"}


def load_adapted_model(ckpt_dir: str, params_dtype: torch.dtype = torch.float32) -> Any:
    """This rank's GPTModel for a LoRA training checkpoint, adapters included, in eval mode.

    Model-parallel groups must be set up (any TP/PP: the checkpoint reshards on load).

    Raises:
        LoraError: the checkpoint was not trained with adapters.
    """
    from megatron_lang.checkpointing.checkpoint import load_model_weights
    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.megatron_model import build_model_for_checkpoint

    meta = load_metadata(ckpt_dir)
    saved = meta.extra.get("lora")
    if not saved:
        raise LoraError(f"{ckpt_dir} has no LoRA adapters (not trained with lora.enabled)")
    model = build_model_for_checkpoint(meta, params_dtype)
    apply_lora(model, LoraConfig(enabled=True, **saved), seed=0)  # A and B come from the file
    load_model_weights(ckpt_dir, [model], adapters=True)
    model.eval()
    return model
