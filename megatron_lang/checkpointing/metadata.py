"""What a checkpoint needs to be used without the command line that made it.

Every megatron_lang checkpoint directory holds, next to megatron-core's own
files, ``megatron_lang.json`` (a :class:`CheckpointMetadata`) and a
``tokenizer/`` folder with the tokenizer files.  Conversion writes them, training
reads them to build the model (architecture, padded vocabulary) and writes them
again with every checkpoint it saves.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from megatron_lang.models.arch import LlamaArch

METADATA_FILE = "megatron_lang.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1


@dataclass
class CheckpointMetadata:
    """Model description saved with every checkpoint."""

    arch: LlamaArch
    """Architecture; ``arch.vocab_size`` is the tokenizer's (unpadded) size."""
    padded_vocab_size: int
    """Rows of the embedding / output layer in the checkpoint (padding rows at the end)."""
    dtype: str = "float32"
    """Dtype the weights are stored in (a ``torch`` dtype name, e.g. ``bfloat16``)."""
    hf_config: dict[str, Any] = field(default_factory=dict)
    """The original HF ``config.json`` as a dict (used to write it back)."""
    generation_config: dict[str, Any] | None = None
    """The original HF ``generation_config.json``, when there was one."""
    source: str = ""
    """Where the weights came from (path of the HF directory or GGUF file)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form additions (e.g. training step, vocabulary-adaptation details)."""
    format_version: int = FORMAT_VERSION
    """Version of this metadata layout."""

    @property
    def family(self) -> str:
        """Model family (selects the conversion table)."""
        return self.arch.family

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["arch"] = self.arch.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMetadata:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys or a newer format version.
        """
        d = dict(d)
        version = d.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"checkpoint metadata format {version} is newer than this code ({FORMAT_VERSION})"
            )
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown checkpoint metadata keys: {sorted(unknown)}")
        d["arch"] = LlamaArch.from_dict(d["arch"])
        return cls(**d)


def save_metadata(
    ckpt_dir: str | os.PathLike, meta: CheckpointMetadata, tokenizer_dir: str | None = None
) -> None:
    """Write ``megatron_lang.json`` (and copy the tokenizer files) into ``ckpt_dir``.

    Args:
        ckpt_dir: checkpoint directory (must exist).
        meta: what to save.
        tokenizer_dir: folder whose files (``tokenizer.json``, ``tokenizer.model``,
            ``tokenizer_config.json`` ...) are copied to ``ckpt_dir/tokenizer``.
    """
    ckpt = Path(ckpt_dir)
    tmp = ckpt / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True, default=str))
    tmp.replace(ckpt / METADATA_FILE)
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, ckpt / TOKENIZER_DIR)


def load_metadata(ckpt_dir: str | os.PathLike) -> CheckpointMetadata:
    """Read the metadata saved by :func:`save_metadata`.

    Raises:
        FileNotFoundError: ``ckpt_dir`` is not a megatron_lang checkpoint.
    """
    path = Path(ckpt_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{ckpt_dir} is not a megatron_lang checkpoint: {METADATA_FILE} is missing"
        )
    return CheckpointMetadata.from_dict(json.loads(path.read_text()))


def tokenizer_path(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint's tokenizer folder, or None when it has none."""
    p = Path(ckpt_dir) / TOKENIZER_DIR
    return p if p.is_dir() and any(p.iterdir()) else None


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def copy_tokenizer_files(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> list[str]:
    """Copy the known tokenizer files present in ``src_dir``; return their names."""
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied
