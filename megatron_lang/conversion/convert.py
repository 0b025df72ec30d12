"""HF -> Megatron (``torch_dist``) and Megatron -> HF (sharded safetensors).

Both directions write into a hidden temporary directory next to the output and
rename it into place only when everything is written; on any error the
temporary directory is removed, so no partial output is left that looks valid.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_lang.checkpointing.metadata import (
    CheckpointMetadata,
    copy_tokenizer_files,
    load_metadata,
    save_metadata,
    tokenizer_path,
)
from megatron_lang.conversion.families import FAMILIES, family_for_hf_config
from megatron_lang.conversion.hf_io import HFSource, StreamingSafetensorsWriter, open_hf
from megatron_lang.conversion.mapping import Conversion, ConversionError, expand, group_by_stage
from megatron_lang.conversion.megatron_io import load_tensors, save_checkpoint_streamed
from megatron_lang.conversion.vocab import DEFAULT_OUTPUT_SHRINK, EmbeddingInit, VocabRemap
from megatron_lang.models.arch import padded_vocab_size
from megatron_lang.platform import get_logger
from megatron_lang.platform.files import atomic_output_dir

log = get_logger(__name__)

IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)
"""HF tensors that carry no weights (buffers some old checkpoints saved)."""


@dataclass
class ConversionReport:
    """What a conversion did."""

    out_dir: Path
    tensors: int
    bytes_written: int
    seconds: float
    padded_vocab_size: int | None = None


def _check_keys(src: HFSource, conversions: list[Conversion], tied: bool) -> None:
    expected = {n for c in conversions for n in c.hf}
    found = src.keys()
    missing = sorted(expected - found)
    if missing:
        shape = next(s for c in conversions for n, s in zip(c.hf, c.hf_shapes) if n == missing[0])
        raise ConversionError(
            f"missing tensor {missing[0]!r} (expected shape {shape}); "
            f"{len(missing)} expected tensor(s) missing from the checkpoint"
        )
    unknown = sorted(
        k
        for k in found - expected
        if not k.endswith(IGNORED_HF_SUFFIXES) and not (tied and k == "lm_head.weight")
    )
    if unknown:
        raise ConversionError(
            f"unknown tensor {unknown[0]!r} ({len(unknown)} tensor(s) not in the mapping table)"
        )


def _load_tokenizer(path: Path | None) -> Any:
    from transformers import AutoTokenizer

    if path is None:
        raise ConversionError("a changed vocabulary needs the source model's tokenizer files")
    return AutoTokenizer.from_pretrained(path)


def hf_to_megatron(
    hf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    new_tokenizer: str | os.PathLike | None = None,
    embed_init: str | EmbeddingInit = "mean",
    output_shrink: float = DEFAULT_OUTPUT_SHRINK,
    vocab_divisor: int = 128,
    tp_for_padding: int = 1,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert an HF model (directory or ``.gguf``) to a megatron-core ``torch_dist`` checkpoint.

    Args:
        hf_path: HF directory (safetensors or .bin) or GGUF file.
        out_dir: checkpoint directory to create.
        new_tokenizer: folder of a new tokenizer; embedding and LM-head rows are
            remapped to it (old tokens keep their rows, new ones from ``embed_init``).
        embed_init: ``mean``, ``random``, a registered name, or a callable.
        output_shrink: new rows of logit-producing matrices (LM head, tied embeddings)
            are pulled toward the mean row by this factor (1 = as the init gives them);
            see :func:`~megatron_lang.conversion.vocab.shrink_toward_mean`.
        vocab_divisor: pad the vocabulary to a multiple of ``vocab_divisor * tp_for_padding``.
        tp_for_padding: tensor-parallel size the padding must suit.
        dtype: stored dtype; default that of the HF embedding.
        overwrite: replace an existing ``out_dir``.

    Raises:
        ConversionError: unsupported architecture, missing/unknown tensors, shape mismatch.
    """
    t0 = time.perf_counter()
    src = open_hf(hf_path)
    try:
        family = family_for_hf_config(src.config)
        arch = family.from_hf_config(src.config)
        conversions = expand(family.rules, arch)
        _check_keys(src, conversions, arch.tie_word_embeddings)
        remap = None
        out_arch = arch
        if new_tokenizer is not None:
            new_tok = _load_tokenizer(Path(new_tokenizer))
            remap = VocabRemap(
                _load_tokenizer(src.tokenizer_dir), new_tok, embed_init, output_shrink
            )
            out_arch = dataclasses.replace(arch, vocab_size=remap.new_size)
        padded = padded_vocab_size(out_arch.vocab_size, vocab_divisor, tp_for_padding)
        for conv in conversions:  # every shape checked before anything is written
            conv.check_shapes([src.meta(n)[0] for n in conv.hf], arch)
        dtype = dtype or src.meta(conversions[0].hf[0])[1]
        by_name = {c.megatron: c for c in conversions}
        specs = {c.megatron: (megatron_shape(c, padded), dtype) for c in conversions}

        def produce(name: str) -> torch.Tensor:
            conv = by_name[name]
            if conv.rule.vocab_rows and remap is not None:
                old = conv.to_megatron([src.get(n) for n in conv.hf], arch)
                output_role = conv.hf[0] == "lm_head.weight" or arch.tie_word_embeddings
                t = remap.apply(old, conv.hf[0], output_role)
                return torch.cat([t, t.new_zeros((padded - t.shape[0], t.shape[1]))]).to(dtype)
            out = (torch.zeros if conv.rule.vocab_rows else torch.empty)(
                specs[name][0], dtype=dtype
            )
            body = out[: arch.vocab_size] if conv.rule.vocab_rows else out  # padding rows stay 0
            views = conv.rule.transform.hf_views(body, arch)
            if views is None:  # a real transform (QKV grouping): it makes the tensor
                del out, body
                return conv.to_megatron([src.get(n) for n in conv.hf], arch).to(dtype).contiguous()
            for n, view in zip(conv.hf, views):  # read straight into place: no extra copy
                src.read_into(n, view)
            return out

        with atomic_output_dir(out_dir, overwrite) as tmp:
            save_checkpoint_streamed(specs, produce, tmp, arch.num_layers)
            n = len(specs)
            nbytes = sum(_numel(s) * d.itemsize for s, d in specs.values())
            hf_config = src.config.to_dict()
            hf_config["vocab_size"] = out_arch.vocab_size
            meta = CheckpointMetadata(
                arch=out_arch,
                padded_vocab_size=padded,
                dtype=str(dtype).removeprefix("torch."),
                hf_config=hf_config,
                generation_config=src.generation_config,
                source=str(hf_path),
                extra={"vocab_divisor": vocab_divisor, "tp_for_padding": tp_for_padding},
            )
            if remap is not None:
                meta.extra["vocab_change"] = {
                    "old_vocab_size": arch.vocab_size,
                    "new_tokens": len(remap.new_ids),
                    "embed_init": getattr(remap.init, "__name__", str(embed_init)),
                    "output_shrink": output_shrink,
                }
            save_metadata(tmp, meta, str(new_tokenizer or src.tokenizer_dir or "") or None)
    finally:
        src.close()
    secs = time.perf_counter() - t0
    log.info("wrote %s: %d tensors, %.1f MB in %.1f s", out_dir, n, nbytes / 1e6, secs)
    return ConversionReport(Path(out_dir), n, nbytes, secs, padded)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def megatron_shape(conv: Conversion, padded_vocab: int) -> tuple[int, ...]:
    """Shape of a conversion's megatron tensor (vocabulary rows padded)."""
    shapes = conv.hf_shapes
    if conv.rule.vocab_rows:
        return (padded_vocab, *shapes[0][1:])
    if len(shapes) == 1:
        return shapes[0]
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def megatron_to_hf(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    overwrite: bool = False,
    merge_lora: bool = True,
) -> ConversionReport:
    """Export a megatron_lang checkpoint to an HF directory (safetensors, config, tokenizer).

    The checkpoint is read one group at a time (embedding, each layer, final
    norm, LM head) and each HF tensor is appended to its safetensors shard as
    soon as it is made. A checkpoint trained with LoRA adapters is exported with
    the adapters merged (``W + alpha/r · B A`` on the fused megatron tensors);
    ``merge_lora=False`` exports the base weights alone.
    """
    from transformers import CONFIG_MAPPING, GenerationConfig

    from megatron_lang.conversion.lora import LoraSpec, merge_adapters

    t0 = time.perf_counter()
    meta = load_metadata(ckpt_dir)
    arch = meta.arch
    if arch.family not in FAMILIES:
        raise ConversionError(f"unsupported family {arch.family!r} in {ckpt_dir}")
    conversions = expand(FAMILIES[arch.family].rules, arch)
    ckpt_dtype = getattr(torch, meta.dtype)
    dtype = dtype or ckpt_dtype
    lora = LoraSpec.from_metadata(meta) if merge_lora else None
    if lora is not None:
        log.info("merging LoRA adapters (r=%d, alpha=%g) into the weights", lora.rank, lora.alpha)
    plan = [(n, s, dtype) for c in conversions for n, s in zip(c.hf, c.hf_shapes)]
    with atomic_output_dir(out_dir, overwrite) as tmp:
        writer = StreamingSafetensorsWriter(tmp, plan, max_shard_bytes)
        try:
            for group in group_by_stage(conversions):
                specs = {
                    c.megatron: (megatron_shape(c, meta.padded_vocab_size), ckpt_dtype)
                    for c in group
                }
                loaded = load_tensors(Path(ckpt_dir), specs, arch.num_layers)
                if lora is not None:
                    merge_adapters(loaded, ckpt_dir, lora, meta)
                for c in group:
                    t = loaded.pop(c.megatron)
                    if c.rule.vocab_rows:
                        t = t[: arch.vocab_size]
                    for name, piece in zip(c.hf, c.rule.transform.to_hf(t, arch)):
                        writer.write(name, piece.to(dtype))
            writer.close()
        finally:
            writer.abort()
        cfg_dict = dict(meta.hf_config)
        cfg_dict["vocab_size"] = arch.vocab_size
        cfg_dict["dtype"] = str(dtype).removeprefix("torch.")
        model_type = cfg_dict.get("model_type", arch.family)
        cfg = CONFIG_MAPPING[model_type].from_dict(cfg_dict)
        cfg.save_pretrained(tmp)
        if meta.generation_config:
            gen = GenerationConfig.from_dict(meta.generation_config)
        else:
            gen = GenerationConfig.from_model_config(cfg)
        gen.save_pretrained(tmp)
        tok = tokenizer_path(ckpt_dir)
        if tok is not None:
            copy_tokenizer_files(tok, tmp)
    secs = time.perf_counter() - t0
    log.info("exported %s: %d tensors in %.1f s", out_dir, len(plan), secs)
    return ConversionReport(Path(out_dir), len(plan), writer.bytes_written, secs)
