"""Remap an existing Megatron checkpoint's embedding and LM head to a new tokenizer.

Works on any megatron_lang ``torch_dist`` checkpoint: one written by the HF
converter or by the training job (an ``iter_N`` folder, or the checkpoint root
whose ``latest`` names one), saved at any TP/PP and with padded vocabulary rows.

* the model tensors are those of the family's mapping table for the
  checkpoint's architecture (``megatron_lang.json``); each is read as a full
  tensor whatever layout wrote it (:func:`megatron_lang.conversion.megatron_io.load_tensors`);
* ``embedding.word_embeddings.weight`` and (untied) ``output_layer.weight`` are
  trimmed to the real vocabulary (``arch.vocab_size``), remapped with
  :class:`~megatron_lang.conversion.vocab.VocabRemap` (old tokens keep their
  rows bit for bit, new ones get the init function's rows, each matrix from its
  own old rows) and padded with zero rows to a multiple of
  ``vocab_divisor x tp_for_padding``;
* every other model tensor is copied unchanged.

The output is a **weights-only** checkpoint, like a converted HF model: optimizer
state, scheduler, RNG states and ``train_state.json`` of a training checkpoint
are not carried over (Adam moments of the embedding rows would not match the new
vocabulary anyway).  Start training from it with ``model.checkpoint=<out>``: the
job builds a fresh optimizer.  The output is written to a temporary sibling and
renamed when complete.
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
    load_metadata,
    save_metadata,
    tokenizer_path,
)
from megatron_lang.conversion.convert import megatron_shape
from megatron_lang.conversion.families import FAMILIES
from megatron_lang.conversion.mapping import ConversionError, expand
from megatron_lang.conversion.megatron_io import (
    checkpoint_key,
    is_torch_dist_checkpoint,
    load_tensors,
    save_checkpoint_streamed,
)
from megatron_lang.conversion.vocab import DEFAULT_OUTPUT_SHRINK, EmbeddingInit, VocabRemap
from megatron_lang.models.arch import padded_vocab_size
from megatron_lang.platform.files import atomic_output_dir
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


@dataclass
class RemapReport:
    """What :func:`remap_checkpoint_vocab` did."""

    out_dir: Path
    source: Path
    old_vocab_size: int
    new_vocab_size: int
    padded_vocab_size: int
    new_tokens: int
    kept_tokens: int
    dropped_tokens: int
    tensors: int
    seconds: float


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder: ``path`` itself, or the one its ``latest`` file names.

    Raises:
        FileNotFoundError: no such folder, or not a megatron_lang checkpoint.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if (p / "latest").is_file():
        from megatron_lang.checkpointing.checkpoint import latest_checkpoint

        p = latest_checkpoint(p) or p
    load_metadata(p)  # raises when megatron_lang.json is missing
    if not is_torch_dist_checkpoint(p):
        raise FileNotFoundError(f"{p} is not a torch_dist checkpoint (metadata.json is missing)")
    return p


def _load_tokenizer(path: str | os.PathLike, what: str) -> Any:
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise ConversionError(f"{what} {path} is not a folder")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers raises many kinds for unreadable folders
        raise ConversionError(f"cannot load {what} from {path}: {e}") from e


def _check_tensors(ckpt: Path, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], layers: int):
    """Every tensor present with the expected global shape, before anything is written."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    for name, (shape, _) in specs.items():
        key, layer = checkpoint_key(name)
        expected = (layers, *shape) if layer is not None else tuple(shape)
        found = md.get(key)
        if not isinstance(found, TensorStorageMetadata):
            raise ConversionError(f"checkpoint {ckpt} has no tensor {key!r} (shape {expected})")
        if tuple(found.size) != expected:
            raise ConversionError(
                f"checkpoint {ckpt}: tensor {key!r} has shape {tuple(found.size)}, "
                f"expected {expected} from its megatron_lang.json"
            )


def remap_checkpoint_vocab(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    new_tokenizer: str | os.PathLike,
    init: str | EmbeddingInit = "mean",
    output_shrink: float = DEFAULT_OUTPUT_SHRINK,
    *,
    vocab_divisor: int | None = None,
    tp_for_padding: int | None = None,
    require_superset: bool = False,
    overwrite: bool = False,
) -> RemapReport:
    """Write a weights-only copy of a checkpoint with its vocabulary remapped to ``new_tokenizer``.

    Args:
        ckpt_dir: megatron_lang checkpoint (converted or training ``iter_N``, or
            a training root with ``latest``); must hold its tokenizer.
        out_dir: checkpoint folder to create.
        new_tokenizer: folder of the new HF tokenizer.
        output_shrink: see :func:`megatron_lang.conversion.vocab.shrink_toward_mean`.
        init: rows of new tokens: ``mean``, ``random``, a registered name or a
            callable such as :class:`megatron_lang.adaptation.focus.FocusInit`.
        vocab_divisor: pad to a multiple of ``vocab_divisor * tp_for_padding``
            (default: the checkpoint's recorded value, else 128).
        tp_for_padding: largest TP the result will be loaded at (default: the
            recorded value, else 1).
        require_superset: fail when an old token is missing from the new vocabulary.
        overwrite: replace an existing ``out_dir``.

    Raises:
        FileNotFoundError: ``ckpt_dir`` is missing or not a megatron_lang checkpoint.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        ConversionError: no tokenizer, unknown family, tensors missing or of
            another shape, old ids beyond the old vocabulary, or a dropped old
            token with ``require_superset``.
    """
    t0 = time.perf_counter()
    ckpt = resolve_checkpoint(ckpt_dir)
    meta = load_metadata(ckpt)
    arch = meta.arch
    if arch.family not in FAMILIES:
        raise ConversionError(f"unsupported family {arch.family!r} in {ckpt}")
    old_tok_dir = tokenizer_path(ckpt)
    if old_tok_dir is None:
        raise ConversionError(
            f"checkpoint {ckpt} has no tokenizer/ folder: the old vocabulary is unknown"
        )
    old_tok = _load_tokenizer(old_tok_dir, "the checkpoint's tokenizer")
    new_tok = _load_tokenizer(new_tokenizer, "new tokenizer")
    remap = VocabRemap(old_tok, new_tok, init, output_shrink)
    bad = [o for o in remap.kept_old if o >= arch.vocab_size]
    if bad:
        raise ConversionError(
            f"the checkpoint's tokenizer has id {max(bad)} but the model has only "
            f"{arch.vocab_size} vocabulary rows"
        )
    new_vocab = new_tok.get_vocab()
    dropped = sorted(t for t in old_tok.get_vocab() if t not in new_vocab)
    if require_superset and dropped:
        raise ConversionError(
            f"new tokenizer {new_tokenizer} lacks {len(dropped)} token(s) of the old vocabulary "
            f"(e.g. {dropped[:5]}); it must be a superset"
        )
    divisor = vocab_divisor or int(meta.extra.get("vocab_divisor", 128))
    tp = tp_for_padding or int(meta.extra.get("tp_for_padding", 1))
    new_arch = dataclasses.replace(arch, vocab_size=remap.new_size)
    padded = padded_vocab_size(remap.new_size, divisor, tp)
    dtype = getattr(torch, meta.dtype)
    conversions = expand(FAMILIES[arch.family].rules, arch)
    by_name = {c.megatron: c for c in conversions}
    old_specs = {
        c.megatron: (megatron_shape(c, meta.padded_vocab_size), dtype) for c in conversions
    }
    _check_tensors(ckpt, old_specs, arch.num_layers)
    specs = {c.megatron: (megatron_shape(c, padded), dtype) for c in conversions}

    def produce(name: str) -> torch.Tensor:
        t = load_tensors(ckpt, {name: old_specs[name]}, arch.num_layers)[name]
        conv = by_name[name]
        if not conv.rule.vocab_rows:
            return t
        output_role = conv.hf[0] == "lm_head.weight" or arch.tie_word_embeddings
        new_VH = remap.apply(t[: arch.vocab_size], conv.hf[0], output_role)
        pad = new_VH.new_zeros((padded - new_VH.shape[0], new_VH.shape[1]))
        return torch.cat([new_VH, pad]).to(dtype)

    with atomic_output_dir(out_dir, overwrite) as tmp:
        save_checkpoint_streamed(specs, produce, tmp, arch.num_layers)
        hf_config = dict(meta.hf_config)
        hf_config["vocab_size"] = remap.new_size
        describe = getattr(remap.init, "describe", None)
        change = {
            "old_vocab_size": arch.vocab_size,
            "new_vocab_size": remap.new_size,
            "new_tokens": len(remap.new_ids),
            "kept_tokens": len(remap.kept_new),
            "dropped_tokens": len(dropped),
            "embed_init": getattr(remap.init, "__name__", str(init)),
            "new_tokenizer": str(new_tokenizer),
            "source_checkpoint": str(ckpt),
        }
        if callable(describe):
            change["embed_init_options"] = describe()
        out_meta = CheckpointMetadata(
            arch=new_arch,
            padded_vocab_size=padded,
            dtype=meta.dtype,
            hf_config=hf_config,
            generation_config=meta.generation_config,
            source=meta.source,
            extra={"vocab_divisor": divisor, "tp_for_padding": tp, "vocab_change": change},
        )
        save_metadata(tmp, out_meta, str(new_tokenizer))
    secs = time.perf_counter() - t0
    log.info(
        "remapped %s -> %s: vocab %d -> %d (%d new, %d dropped), padded %d, %.1f s",
        ckpt,
        out_dir,
        arch.vocab_size,
        remap.new_size,
        len(remap.new_ids),
        len(dropped),
        padded,
        secs,
    )
    return RemapReport(
        Path(out_dir),
        ckpt,
        arch.vocab_size,
        remap.new_size,
        padded,
        len(remap.new_ids),
        len(remap.kept_new),
        len(dropped),
        len(specs),
        secs,
    )
