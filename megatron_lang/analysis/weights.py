"""Open HF and Megatron checkpoints as streams of canonically named (HF-named) tensors.

A :class:`WeightSource` resolves a path (an HF safetensors/``.bin`` directory, a
``.gguf`` file (de-quantised in memory, for small models), a megatron_lang
``torch_dist`` checkpoint such as a converter output or a trainer's
``iter_XXXXXXX``, or a training run folder with a ``latest`` pointer) and reads
one mapping-table rule at a time, returning the rule's HF tensors.  Megatron
tensors go through the rule's transform (fused QKV -> q/k/v, ``linear_fc1`` ->
gate/up) and their vocabulary padding rows are dropped, so an HF checkpoint and
a Megatron checkpoint yield the same names and shapes.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

from megatron_lang.checkpointing.checkpoint import LATEST, TRAIN_STATE, latest_checkpoint
from megatron_lang.checkpointing.metadata import METADATA_FILE, load_metadata, tokenizer_path
from megatron_lang.conversion.families import FAMILIES, family_for_hf_config
from megatron_lang.conversion.hf_io import HFSource, open_hf
from megatron_lang.conversion.mapping import Conversion, ConversionError, expand
from megatron_lang.conversion.megatron_io import (
    checkpoint_key,
    is_torch_dist_checkpoint,
    load_tensors,
)
from megatron_lang.models.arch import LlamaArch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
"""Any of these in a folder means it holds a tokenizer."""

_STEP_PATTERNS = (
    re.compile(r"iter_(\d+)$"),
    re.compile(r"(?:checkpoint|step|ckpt|iter)[-_]?(\d+)$", re.IGNORECASE),
)


class DivergenceError(ValueError):
    """A checkpoint that cannot be compared (names the checkpoint and the tensor)."""


def step_from_name(path: str | os.PathLike) -> int | None:
    """Training step encoded in a checkpoint folder's name (``iter_0000100``, ``checkpoint-500``)."""
    name = Path(path).name
    for pat in _STEP_PATTERNS:
        m = pat.search(name)
        if m:
            return int(m.group(1))
    return None


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, str]:
    """(checkpoint folder, ``"hf"`` or ``"megatron"``) for a user-given path.

    A run folder with a ``latest`` pointer resolves to the checkpoint it names.

    Raises:
        DivergenceError: the path does not exist or holds no recognised checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise DivergenceError(f"checkpoint {p} does not exist")
    if p.is_dir() and (p / LATEST).is_file():
        try:
            resolved = latest_checkpoint(p)
        except FileNotFoundError as e:
            raise DivergenceError(str(e)) from e
        assert resolved is not None
        p = resolved
    if p.is_dir() and (p / "config.json").is_file() or p.is_file() and p.suffix == ".gguf":
        return p, "hf"
    if p.is_dir() and is_torch_dist_checkpoint(p):
        if not (p / METADATA_FILE).is_file():
            raise DivergenceError(
                f"{p} is a torch_dist checkpoint without {METADATA_FILE}: its architecture "
                "is unknown (only megatron_lang checkpoints can be compared)"
            )
        return p, "megatron"
    raise DivergenceError(
        f"{p} is not a checkpoint: expected an HF directory (config.json + *.safetensors), "
        f"a megatron_lang torch_dist checkpoint (metadata.json + {METADATA_FILE}) "
        f"or a run folder with a '{LATEST}' file"
    )


@dataclass
class CheckpointInfo:
    """What the report says about one compared checkpoint."""

    path: str
    """Resolved checkpoint folder."""
    kind: str
    """``hf`` or ``megatron``."""
    label: str
    """Short name used in tables and plots."""
    step: int | None
    """Training step, when known from ``train_state.json`` or the folder name."""
    vocab_size: int
    """Tokenizer vocabulary size (unpadded rows)."""
    has_tokenizer: bool
    """Whether the checkpoint carries tokenizer files."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


class WeightSource:
    """One checkpoint, read rule by rule as canonical (HF-named) tensors."""

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        """Open the checkpoint at ``path`` (see :func:`resolve_checkpoint`).

        Raises:
            DivergenceError: missing or unrecognised checkpoint, unsupported architecture.
        """
        self.path, self.kind = resolve_checkpoint(path)
        tok_dir: Path | None
        self._hf: HFSource | None = None
        self._storage: dict[str, Any] = {}
        try:
            if self.kind == "hf":
                self._hf = open_hf(self.path)
                self.arch: LlamaArch = family_for_hf_config(self._hf.config).from_hf_config(
                    self._hf.config
                )
                tok_dir = self._hf.tokenizer_dir
            else:
                meta = load_metadata(self.path)
                self.arch = meta.arch
                if self.arch.family not in FAMILIES:
                    raise DivergenceError(f"{self.path}: unsupported family {self.arch.family!r}")
                tok_dir = tokenizer_path(self.path)
                self._storage = _storage_metadata(self.path)
        except ConversionError as e:
            raise DivergenceError(f"{self.path}: {e}") from e
        self.tokenizer_dir = (
            tok_dir if tok_dir and any((tok_dir / f).is_file() for f in TOKENIZER_FILES) else None
        )
        self.conversions: dict[str, Conversion] = {
            c.megatron: c for c in expand(FAMILIES[self.arch.family].rules, self.arch)
        }
        self.info = CheckpointInfo(
            path=str(self.path),
            kind=self.kind,
            label=label or _default_label(Path(path), self.path),
            step=self._step(),
            vocab_size=self.arch.vocab_size,
            has_tokenizer=self.tokenizer_dir is not None,
        )
        self._tokenizer: Any = None

    def _step(self) -> int | None:
        state = self.path / TRAIN_STATE
        if state.is_file():
            try:
                return int(json.loads(state.read_text())["step"])
            except (KeyError, ValueError, TypeError):
                pass
        return step_from_name(self.path)

    def tokenizer(self) -> Any:
        """The checkpoint's HF tokenizer (loaded once), or None without tokenizer files."""
        if self._tokenizer is None and self.tokenizer_dir is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return self._tokenizer

    def check(self) -> None:
        """Check every tensor of the mapping table is present with the expected shape.

        Reads only headers / checkpoint metadata.

        Raises:
            DivergenceError: a tensor is missing or has another shape (names file and tensor).
        """
        for conv in self.conversions.values():
            if self._hf is not None:
                keys = self._hf.keys()
                for name, shape in zip(conv.hf, conv.hf_shapes):
                    if name not in keys:
                        raise DivergenceError(
                            f"{self.path}: missing tensor {name!r} (expected shape {shape})"
                        )
                    found = self._hf.meta(name)[0]
                    if tuple(found) != shape:
                        raise DivergenceError(
                            f"{self.path}: tensor {name!r} has shape {tuple(found)}, "
                            f"expected {shape} from its config.json"
                        )
            else:
                self._megatron_spec(conv)

    def _megatron_spec(self, conv: Conversion) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape (one layer's) and dtype of a rule's tensor in the torch_dist checkpoint."""
        key, layer = checkpoint_key(conv.megatron)
        md = self._storage.get(key)
        if md is None:
            raise DivergenceError(f"{self.path}: checkpoint has no tensor {key!r}")
        size = tuple(md.size)
        if layer is not None:
            if size[0] != self.arch.num_layers:
                raise DivergenceError(
                    f"{self.path}: tensor {key!r} stacks {size[0]} layers, "
                    f"the architecture has {self.arch.num_layers}"
                )
            size = size[1:]
        shapes = conv.hf_shapes
        if conv.rule.vocab_rows:
            expected = shapes[0]
            ok = size[1:] == expected[1:] and size[0] >= expected[0]
        else:
            expected = (
                shapes[0] if len(shapes) == 1 else (sum(s[0] for s in shapes), *shapes[0][1:])
            )
            ok = size == expected
        if not ok:
            raise DivergenceError(
                f"{self.path}: tensor {key!r} has shape {size}, expected {expected} "
                f"for its architecture"
            )
        return size, md.properties.dtype

    def read(self, megatron_name: str) -> list[torch.Tensor]:
        """The HF tensors of one rule (in the rule's order), vocabulary rows unpadded.

        Raises:
            DivergenceError: the tensor cannot be read.
        """
        conv = self.conversions[megatron_name]
        try:
            if self._hf is not None:
                return [self._hf.get(n) for n in conv.hf]
            spec = self._megatron_spec(conv)
            with warnings.catch_warnings():  # DCP's "assuming a single process" notice
                warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
                loaded = load_tensors(self.path, {megatron_name: spec}, self.arch.num_layers)
            t = loaded[megatron_name]
        except ConversionError as e:
            raise DivergenceError(f"{self.path}: {e}") from e
        except (OSError, RuntimeError, CheckpointException) as e:  # missing / corrupt files
            cause: BaseException = e
            if isinstance(e, CheckpointException) and e.failures:  # one failure per rank
                cause = next(iter(e.failures.values()))
                cause = cause[0] if isinstance(cause, tuple) else getattr(cause, "exc", cause)
            raise DivergenceError(
                f"{self.path}: cannot read tensor {checkpoint_key(megatron_name)[0]!r}: "
                f"{type(cause).__name__}: {cause}"
            ) from e
        if conv.rule.vocab_rows:
            t = t[: self.arch.vocab_size]
        return conv.rule.transform.to_hf(t, self.arch)

    def close(self) -> None:
        """Release open files."""
        if self._hf is not None:
            self._hf.close()


def _storage_metadata(path: Path) -> dict[str, Any]:
    """Key -> ``TensorStorageMetadata`` of a torch_dist checkpoint (tensors only)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        md = dcp.FileSystemReader(str(path)).read_metadata()
    except Exception as e:  # corrupt / incomplete checkpoint
        raise DivergenceError(f"{path}: cannot read the torch_dist metadata: {e}") from e
    files = {getattr(v, "relative_path", None) for v in (md.storage_data or {}).values()}
    missing = sorted(f for f in files if f and not (path / f).is_file())
    if missing:
        raise DivergenceError(f"{path}: incomplete checkpoint, data file {missing[0]} is missing")
    return {k: v for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}


def _default_label(given: Path, resolved: Path) -> str:
    if given.resolve() != resolved.resolve():  # a run folder: name it run/iter_N
        return f"{given.name}/{resolved.name}"
    return resolved.name
