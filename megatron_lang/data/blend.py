"""Data blends with per-source repetition caps, from a YAML spec.

A blend mixes several Megatron indexed datasets (``.bin``/``.idx`` prefixes) by
weight.  Small sources in a low-resource language are usually upsampled, but only
a bounded number of times: each source carries ``max_epochs``.  Given the total
number of training tokens, :meth:`BlendSpec.compute_effective_weights` caps every
source at ``max_epochs`` passes over its training tokens and gives the excess to
the sources that still have room, in proportion to their weights (water-filling,
:func:`water_fill`).  The result is a :class:`BlendReport`
with tokens available, tokens drawn, epochs and share per source.

Example spec (see ``docs/blends.md``)::

    split: "99,1,0"          # held-out split for sources without valid_path
    sources:
      - {name: da_web, path: da/web_text_document, weight: 0.5, max_epochs: 4, language: da}
      - {name: en_web, path: en/web_text_document, weight: 0.5, language: en}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from megatron_lang.platform.logging import get_logger

__all__ = [
    "BlendError",
    "BlendReport",
    "BlendSource",
    "BlendSpec",
    "SourceAllocation",
    "SourceStats",
    "water_fill",
]

logger = get_logger(__name__)


class BlendError(ValueError):
    """An invalid blend spec; the message names the source and key at fault."""


@dataclass
class BlendSource:
    """One source of a blend."""

    name: str
    """Unique name, used in reports and as the validation-set label."""
    path: str
    """Megatron indexed-dataset prefix (``path.bin`` and ``path.idx`` must exist)."""
    weight: float
    """Relative sampling weight (> 0); weights are normalised over the blend."""
    max_epochs: float | None = None
    """Most passes over this source's training tokens; ``None`` means uncapped."""
    language: str | None = None
    """Optional language tag (e.g. ``da``), shown in reports and validation labels."""
    valid_path: str | None = None
    """Optional separate validation prefix; when set, all of ``path`` is used for training."""


@dataclass
class SourceStats:
    """Size of a source's training and validation parts (in sequences and tokens)."""

    train_sequences: int
    """Sequences (documents, or sentences when split) in the training part."""
    train_tokens: int
    """Tokens in the training part."""
    valid_sequences: int
    """Sequences in the validation part (0 when there is none)."""
    valid_tokens: int
    """Tokens in the validation part."""


_TOP_KEYS = {"sources", "split", "root"}
_SOURCE_KEYS = {f.name for f in fields(BlendSource)}
_REQUIRED = ("name", "path", "weight")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BlendError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise BlendError(f"{where} must be > 0, got {value!r}")
    return float(value)


@dataclass
class BlendSpec:
    """A blend: sources plus the split used for sources without a validation prefix."""

    sources: list[BlendSource]
    """The sources, in order (the order fixes the source ids of the blend index)."""
    split: str | None = None
    """Megatron split string (``"99,1,0"``) applied to sources without ``valid_path``;
    ``None`` trains on all of them and validates only sources that have ``valid_path``."""
    _stats: dict[str, SourceStats] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path, check_files: bool = True) -> BlendSpec:
        """Load and validate a YAML spec.

        Relative dataset paths resolve against ``root`` (a top-level key), which
        itself defaults to the folder holding the YAML file.
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise BlendError(f"{path}: not valid YAML: {err}") from err
        return cls.from_dict(data, base_dir=path.parent, check_files=check_files)

    @classmethod
    def from_dict(
        cls, data: Any, base_dir: str | Path = ".", check_files: bool = True
    ) -> BlendSpec:
        """Build and validate a spec from plain data (the parsed YAML)."""
        if not isinstance(data, dict):
            raise BlendError("a blend spec must be a mapping with a 'sources' list")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise BlendError(f"unknown top-level key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
        root = Path(base_dir) / str(data.get("root", "."))
        raw = data.get("sources")
        if not isinstance(raw, list) or not raw:
            raise BlendError("'sources' must be a non-empty list")
        sources = []
        for i, item in enumerate(raw):
            label = f"source #{i}" + (f" ({item.get('name')!r})" if isinstance(item, dict) else "")
            if not isinstance(item, dict):
                raise BlendError(f"{label} must be a mapping, got {item!r}")
            unknown = sorted(set(item) - _SOURCE_KEYS)
            if unknown:
                raise BlendError(
                    f"{label}: unknown key(s) {unknown}; allowed: {sorted(_SOURCE_KEYS)}"
                )
            missing = [k for k in _REQUIRED if k not in item]
            if missing:
                raise BlendError(f"{label}: missing required key(s) {missing}")
            kwargs = dict(item)
            kwargs["name"] = str(item["name"])
            for key in ("path", "valid_path"):
                if kwargs.get(key) is not None:
                    kwargs[key] = os.path.normpath(root / str(kwargs[key]))
            sources.append(BlendSource(**kwargs))
        spec = cls(sources=sources, split=data.get("split"))
        spec.validate(check_files=check_files)
        return spec

    def validate(self, check_files: bool = True) -> None:
        """Check names, weights, caps, the split and (optionally) the dataset files.

        Raises:
            BlendError: naming the source and key at fault.
        """
        seen: set[str] = set()
        for src in self.sources:
            if not src.name or src.name in seen:
                raise BlendError(f"source name {src.name!r} is empty or used twice")
            seen.add(src.name)
            src.weight = _number(src.weight, f"source {src.name!r}: 'weight'")
            if src.max_epochs is not None:
                src.max_epochs = _number(src.max_epochs, f"source {src.name!r}: 'max_epochs'")
            if check_files:
                for key in ("path", "valid_path"):
                    prefix = getattr(src, key)
                    for suffix in (".bin", ".idx") if prefix else ():
                        if not Path(prefix + suffix).is_file():
                            raise BlendError(
                                f"source {src.name!r}: '{key}' file {prefix + suffix} not found"
                            )
        if self.split is not None:
            parts = str(self.split).split(",")
            try:
                values = [float(x) for x in parts]
            except ValueError:
                values = []
            if not 1 <= len(values) <= 3 or min(values) < 0 or not values[0] > 0:
                raise BlendError(
                    f"'split' {self.split!r} is not a valid split string: expected up to three "
                    "comma-separated non-negative numbers with a positive train part, e.g. '99,1,0'"
                )

    def stats(self, source: BlendSource) -> SourceStats:
        """Sequences and tokens of a source's training and validation parts (cached).

        The split follows megatron-core's builder exactly: sequence ranges
        ``round(lo * n) .. round(hi * n)`` of the split matrix.
        """
        if source.name not in self._stats:
            self._stats[source.name] = _compute_stats(source, self.split)
        return self._stats[source.name]

    def compute_effective_weights(self, total_tokens: float) -> BlendReport:
        """Allocate ``total_tokens`` over the sources, respecting ``max_epochs``.

        Args:
            total_tokens: training tokens of the whole run (e.g. ``250e9``).

        Returns:
            The report: tokens available/drawn, epochs and share per source.

        Raises:
            BlendError: when the caps cannot supply ``total_tokens``.
        """
        if not total_tokens > 0:
            raise BlendError(f"total tokens must be > 0, got {total_tokens!r}")
        available = [float(self.stats(s).train_tokens) for s in self.sources]
        for src, tokens in zip(self.sources, available):
            if tokens <= 0:
                raise BlendError(f"source {src.name!r}: its training part has no tokens")
        caps = [
            math.inf if s.max_epochs is None else s.max_epochs * a
            for s, a in zip(self.sources, available)
        ]
        try:
            drawn = water_fill([s.weight for s in self.sources], caps, float(total_tokens))
        except ValueError as err:
            detail = ", ".join(
                f"{s.name}: {c:.4g} ({s.max_epochs} x {a:.4g})"
                for s, c, a in zip(self.sources, caps, available)
            )
            raise BlendError(
                f"the caps cannot supply {total_tokens:.4g} tokens: they allow at most "
                f"{sum(caps):.4g} ({detail}); raise max_epochs or add an uncapped source"
            ) from err
        total_weight = sum(s.weight for s in self.sources)
        rows = [
            SourceAllocation(
                name=s.name,
                language=s.language,
                weight=s.weight / total_weight,
                max_epochs=s.max_epochs,
                tokens_available=int(a),
                tokens_drawn=d,
                epochs=d / a,
                share=d / float(total_tokens),
            )
            for s, a, d in zip(self.sources, available, drawn)
        ]
        return BlendReport(total_tokens=float(total_tokens), sources=rows)


def _compute_stats(source: BlendSource, split: str | None) -> SourceStats:
    import numpy as np
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    def read_lengths(prefix: str):
        # Copy: the arrays view the index mmap, which closes with the dataset object.
        dataset = IndexedDataset(prefix, mmap=True)
        return np.array(dataset.sequence_lengths, dtype=np.int64)

    lengths = read_lengths(source.path)
    n = len(lengths)
    train, valid = (0, n), (0, 0)
    if source.valid_path is None and split is not None:
        matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
        bounds = [None if m is None else (round(m[0] * n), round(m[1] * n)) for m in matrix]
        train = bounds[0] or (0, 0)
        valid = bounds[1] or (0, 0)
    valid_lengths = lengths[valid[0] : valid[1]]
    if source.valid_path is not None:
        valid_lengths = read_lengths(source.valid_path)
    return SourceStats(
        train_sequences=int(train[1] - train[0]),
        train_tokens=int(lengths[train[0] : train[1]].sum()),
        valid_sequences=int(len(valid_lengths)),
        valid_tokens=int(valid_lengths.sum()),
    )


def water_fill(weights: list[float], caps: list[float], total: float) -> list[float]:
    """Split ``total`` in proportion to ``weights`` without exceeding ``caps``.

    Iteratively: give every uncapped source ``lambda * w_i`` with ``lambda`` such
    that the allocations sum to what is left; sources whose share would exceed
    their cap get exactly the cap and drop out; repeat.  The result is the unique
    ``x_i = min(cap_i, lambda * w_i)`` with ``sum(x) == total``.

    Args:
        weights: relative weights (> 0).
        caps: the most each source can give (``math.inf`` for no limit).
        total: the amount to allocate.

    Returns:
        The allocation per source.

    Raises:
        ValueError: when ``sum(caps) < total``.
    """
    if sum(caps) < total * (1 - 1e-12):
        raise ValueError(f"caps sum to {sum(caps)} < {total}")
    alloc = [0.0] * len(weights)
    active = [i for i in range(len(weights)) if caps[i] > 0]
    remaining = float(total)
    while active:
        scale = remaining / sum(weights[i] for i in active)
        capped = [i for i in active if scale * weights[i] >= caps[i]]
        if not capped:
            for i in active:
                alloc[i] = scale * weights[i]
            break
        for i in capped:
            alloc[i] = caps[i]
            remaining -= caps[i]
        active = [i for i in active if i not in capped]
    return alloc


@dataclass
class SourceAllocation:
    """One row of a blend report."""

    name: str
    """Source name."""
    language: str | None
    """Language tag, if any."""
    weight: float
    """Requested weight, normalised over the blend."""
    max_epochs: float | None
    """Cap on passes over the source (``None``: uncapped)."""
    tokens_available: int
    """Tokens in the source's training part (one epoch)."""
    tokens_drawn: float
    """Tokens the run draws from the source."""
    epochs: float
    """``tokens_drawn / tokens_available``; never above ``max_epochs``."""
    share: float
    """Effective weight: ``tokens_drawn / total_tokens`` (shares sum to 1)."""


@dataclass
class BlendReport:
    """Effective blend for a given number of training tokens."""

    total_tokens: float
    """Training tokens of the whole run."""
    sources: list[SourceAllocation]
    """One row per source, in spec order."""

    @property
    def effective_weights(self) -> list[float]:
        """Shares per source, in spec order (sum to 1)."""
        return [row.share for row in self.sources]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"total_tokens": self.total_tokens, "sources": [asdict(r) for r in self.sources]}

    def to_json(self, indent: int = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        """The report as an aligned text table (one row per source plus a total)."""
        head = ("source", "lang", "weight", "share", "available", "drawn", "epochs", "cap")
        rows = [
            (
                r.name,
                r.language or "-",
                f"{r.weight:.4f}",
                f"{r.share:.4f}",
                _human(r.tokens_available),
                _human(r.tokens_drawn),
                f"{r.epochs:.3f}",
                "-" if r.max_epochs is None else f"{r.max_epochs:g}",
            )
            for r in self.sources
        ]
        total_share = sum(r.share for r in self.sources)
        total_avail = sum(r.tokens_available for r in self.sources)
        rows.append(
            (
                "total",
                "",
                "1.0000",
                f"{total_share:.4f}",
                _human(total_avail),
                _human(self.total_tokens),
                "",
                "",
            )
        )
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                str(c).rjust(w) if i >= 2 else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            ).rstrip()
            for row in [head, *rows]
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        return "\n".join(lines)


def _human(tokens: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(tokens) >= scale:
            return f"{tokens / scale:.2f}{unit}"
    return f"{tokens:.0f}"
