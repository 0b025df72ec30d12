"""LoRA adapters of a training checkpoint: merged into the base weights, or as an HF PEFT adapter.

A run with ``lora.enabled`` saves, next to each adapted weight ``W`` (full-model
name ``decoder.layers.{i}.self_attention.linear_qkv.weight``), the adapter's
``…linear_qkv_lora.lora_A`` ``[r, in]`` and ``…linear_qkv_lora.lora_B`` ``[out, r]``
in megatron's (fused) row layout, and the adapter settings in the checkpoint
metadata (``extra["lora"]``).

* Merged: ``W' = W + (alpha / r) · B A`` on the fused megatron tensor, then the
  family table splits ``W'`` as for any checkpoint (``megatron_to_hf`` does this
  whenever the checkpoint has adapters).
* PEFT: each HF projection gets its own ``lora_A`` / ``lora_B``. A fused layer's
  ``B`` is split by the same table transform as the weight (its rows follow the
  weight's rows) and its ``A`` is copied to every projection, which is exact:
  ``B_q A`` is the ``q`` rows of ``B A``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_lang.checkpointing.metadata import (
    CheckpointMetadata,
    copy_tokenizer_files,
    load_metadata,
    tokenizer_path,
)
from megatron_lang.conversion.families import FAMILIES
from megatron_lang.conversion.mapping import ConversionError, dims, expand
from megatron_lang.conversion.megatron_io import load_tensors
from megatron_lang.models.arch import LlamaArch
from megatron_lang.platform import get_logger
from megatron_lang.platform.files import atomic_output_dir

log = get_logger(__name__)

ADAPTED = {
    "linear_qkv": "decoder.layers.{layer}.self_attention.linear_qkv",
    "linear_proj": "decoder.layers.{layer}.self_attention.linear_proj",
    "linear_fc1": "decoder.layers.{layer}.mlp.linear_fc1",
    "linear_fc2": "decoder.layers.{layer}.mlp.linear_fc2",
    "output_layer": "output_layer",
}
"""LoRA target -> full-model name of the adapted layer (``{layer}``: layer index)."""


@dataclass(frozen=True)
class LoraSpec:
    """The adapter settings a checkpoint was trained with."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the factor of ``B A`` in the update."""
        return self.alpha / self.rank

    @classmethod
    def from_metadata(cls, meta: CheckpointMetadata) -> LoraSpec | None:
        """The spec saved with a training checkpoint, or None when it has no adapters."""
        d = meta.extra.get("lora")
        if not d:
            return None
        return cls(
            int(d["rank"]), float(d["alpha"]), float(d["dropout"]), tuple(d["target_modules"])
        )

    def adapted_layers(self, arch: LlamaArch) -> dict[str, str]:
        """Full-model weight name -> target for every adapted layer."""
        out = {}
        for target in self.target_modules:
            layers = range(arch.num_layers) if "{layer}" in ADAPTED[target] else [0]
            for i in layers:
                out[ADAPTED[target].format(layer=i) + ".weight"] = target
        return out


def adapter_shapes(
    target: str, spec: LoraSpec, arch: LlamaArch, padded_vocab: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Full shapes of ``(A, B)`` for an adapted ``target`` (``B`` in megatron's fused row layout)."""
    d = dims(arch)
    in_out = {
        "linear_qkv": (d["hidden"], d["q"] + 2 * d["kv"]),
        "linear_proj": (d["q"], d["hidden"]),
        "linear_fc1": (d["hidden"], 2 * d["ffn"]),
        "linear_fc2": (d["ffn"], d["hidden"]),
        "output_layer": (d["hidden"], padded_vocab),
    }[target]
    return (spec.rank, in_out[0]), (in_out[1], spec.rank)


def load_adapters(
    ckpt_dir: str | os.PathLike,
    weights: list[str],
    spec: LoraSpec,
    meta: CheckpointMetadata,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(A, B)`` of the adapted layers whose full-model weight names are ``weights``."""
    targets = spec.adapted_layers(meta.arch)
    dtype = getattr(torch, meta.dtype)
    specs = {}
    for w in weights:
        a_shape, b_shape = adapter_shapes(targets[w], spec, meta.arch, meta.padded_vocab_size)
        base = w.removesuffix(".weight")
        specs[f"{base}_lora.lora_A"] = (a_shape, dtype)
        specs[f"{base}_lora.lora_B"] = (b_shape, dtype)
    loaded = load_tensors(Path(ckpt_dir), specs, meta.arch.num_layers)
    out = {}
    for w in weights:
        base = w.removesuffix(".weight")
        out[w] = (loaded[f"{base}_lora.lora_A"], loaded[f"{base}_lora.lora_B"])
    return out


def merge_adapters(
    tensors: dict[str, torch.Tensor],
    ckpt_dir: str | os.PathLike,
    spec: LoraSpec,
    meta: CheckpointMetadata,
) -> int:
    """Replace each adapted weight in ``tensors`` (full-model names) by ``W + scaling · B A``.

    Computed in fp32 and cast back to the weight's dtype. Returns how many were merged.
    """
    adapted = spec.adapted_layers(meta.arch)
    names = [n for n in tensors if n in adapted]
    if not names:
        return 0
    for name, (a_RI, b_OR) in load_adapters(ckpt_dir, names, spec, meta).items():
        w_OI = tensors[name]
        merged_OI = w_OI.float() + spec.scaling * (b_OR.float() @ a_RI.float())
        tensors[name] = merged_OI.to(w_OI.dtype)
    return len(names)


def export_peft(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the checkpoint's adapters as an HF PEFT LoRA adapter directory.

    ``adapter_config.json`` and ``adapter_model.safetensors`` with PEFT's key names
    (``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`` …), loadable
    with ``peft.PeftModel.from_pretrained(hf_base_model, out_dir)``; the checkpoint's
    tokenizer files beside them (a chat run's ``chat_template.jinja`` included).

    Raises:
        ConversionError: the checkpoint has no adapters, or an unsupported family.
    """
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    meta = load_metadata(ckpt_dir)
    spec = LoraSpec.from_metadata(meta)
    if spec is None:
        raise ConversionError(f"{ckpt_dir} has no LoRA adapters (not trained with lora.enabled)")
    arch = meta.arch
    if arch.family not in FAMILIES:
        raise ConversionError(f"unsupported family {arch.family!r} in {ckpt_dir}")
    adapted = spec.adapted_layers(arch)
    conversions = [c for c in expand(FAMILIES[arch.family].rules, arch) if c.megatron in adapted]
    loaded = load_adapters(ckpt_dir, [c.megatron for c in conversions], spec, meta)
    dtype = dtype or getattr(torch, meta.dtype)
    tensors: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    for c in conversions:
        a_RI, b_OR = loaded[c.megatron]
        if c.rule.vocab_rows:
            b_OR = b_OR[: arch.vocab_size]
        for hf_name, b_part in zip(c.hf, c.rule.transform.to_hf(b_OR, arch)):
            module = hf_name.removesuffix(".weight")
            modules.add(module.rsplit(".", 1)[-1])
            tensors[f"base_model.model.{module}.lora_A.weight"] = a_RI.to(dtype).clone()
            tensors[f"base_model.model.{module}.lora_B.weight"] = b_part.to(dtype).contiguous()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    with atomic_output_dir(out_dir, overwrite) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        tok = tokenizer_path(ckpt_dir)
        if tok is not None:  # as TRL/PEFT save them: the trained chat template travels along
            copy_tokenizer_files(tok, tmp)
    log.info(
        "exported PEFT adapter %s: %d tensors, targets %s in %.1f s",
        out_dir,
        len(tensors),
        ", ".join(sorted(modules)),
        time.perf_counter() - t0,
    )
    return Path(out_dir)
