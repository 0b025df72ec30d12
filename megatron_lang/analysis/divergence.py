"""Weight divergence: which weights changed, and by how much, during continued pretraining.

Compares a base checkpoint with one or more later checkpoints (HF or Megatron,
in any mix; see :mod:`megatron_lang.analysis.weights`).  Tensors are matched by
their HF name; fused Megatron tensors are split back into q/k/v and gate/up, so
every component is measured on its own.  The checkpoints are streamed one
mapping-table rule at a time: at most the base's and one other checkpoint's
tensors of one rule are in memory.

Per tensor: mean |ΔW|, relative change ‖ΔW‖_F / ‖W_base‖_F and max |ΔW|, where
ΔW = W_ckpt − W_base.  These are aggregated per component (all layers' ``q``
tensors together, etc.) and per layer (a layers × components matrix).  For the
input embedding and the LM head, the per-token L1 change Σ_h |ΔW[token, h]| is
computed and its top tokens decoded.  When the vocabularies differ, rows are
matched by token string and the rows of new tokens are summarised separately.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from megatron_lang.analysis.weights import CheckpointInfo, DivergenceError, WeightSource
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

SCHEMA_VERSION = 1
LAYER_COMPONENTS = (
    "q",
    "k",
    "v",
    "o",
    "gate",
    "up",
    "down",
    "input_norm",
    "post_attention_norm",
)
"""Components present in every decoder layer (columns of the layer matrix)."""
COMPONENTS = ("embeddings", *LAYER_COMPONENTS, "final_norm", "lm_head")
"""All components, in report order."""
VOCAB_COMPONENTS = {"model.embed_tokens.weight": "embeddings", "lm_head.weight": "lm_head"}

_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate",
    "mlp.up_proj": "up",
    "mlp.down_proj": "down",
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attention_norm",
}
_GLOBAL = {**VOCAB_COMPONENTS, "model.norm.weight": "final_norm"}
_ARCH_FIELDS = (
    "family",
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "ffn_hidden_size",
    "head_dim",
    "tie_word_embeddings",
    "qkv_bias",
)
"""Architecture fields two compared checkpoints must share (the vocabulary may differ)."""
_CHUNK_ELEMENTS = 1 << 22


def component_of(hf_name: str) -> tuple[str, int | None]:
    """(component, layer index or None) of an HF tensor name."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name], None
    m = _LAYER_RE.match(hf_name)
    if m:
        module = m.group(2).rsplit(".", 1)[0]
        if module in _LAYER_PARTS:
            return _LAYER_PARTS[module], int(m.group(1))
        return "other", int(m.group(1))
    return "other", None


@dataclass
class Stats:
    """Sums from which the divergence figures of one or more tensors follow."""

    numel: int = 0
    abs_sum: float = 0.0
    """Σ |ΔW|."""
    sq_diff: float = 0.0
    """Σ ΔW²."""
    sq_base: float = 0.0
    """Σ W_base²."""
    max_abs: float = 0.0
    """max |ΔW|."""

    def add(self, other: Stats) -> None:
        """Accumulate another tensor's sums."""
        self.numel += other.numel
        self.abs_sum += other.abs_sum
        self.sq_diff += other.sq_diff
        self.sq_base += other.sq_base
        self.max_abs = max(self.max_abs, other.max_abs)

    @property
    def mean_abs_diff(self) -> float:
        """Mean |ΔW|."""
        return self.abs_sum / self.numel if self.numel else 0.0

    @property
    def rel_change(self) -> float | None:
        """‖ΔW‖_F / ‖W_base‖_F (None when the base is all zeros and ΔW is not)."""
        if self.sq_base > 0:
            return (self.sq_diff / self.sq_base) ** 0.5
        return 0.0 if self.sq_diff == 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The report's figures."""
        return {
            "numel": self.numel,
            "mean_abs_diff": self.mean_abs_diff,
            "rel_change": self.rel_change,
            "max_abs_diff": self.max_abs,
            "l2_diff": self.sq_diff**0.5,
            "l2_base": self.sq_base**0.5,
        }


@dataclass
class TensorResult:
    """Divergence of one (canonical, HF-named) tensor."""

    name: str
    component: str
    layer: int | None
    shape: tuple[int, ...]
    """Compared shape (shared vocabulary rows for embedding / LM head)."""
    stats: Stats

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "component": self.component,
            "layer": self.layer,
            "shape": list(self.shape),
            **self.stats.to_dict(),
        }


@dataclass
class VocabAlignment:
    """Which rows of the other checkpoint's vocabulary tensors match which base rows."""

    base_size: int
    size: int
    base_ids: torch.Tensor | None
    """Base rows of the shared tokens (None: identical vocabularies, row i = row i)."""
    other_ids: torch.Tensor | None
    """The other checkpoint's rows of the same tokens."""
    new_ids: list[int] = field(default_factory=list)
    """Rows of tokens the base vocabulary lacks."""
    removed: int = 0
    """Base tokens missing from the other vocabulary."""

    @property
    def shared(self) -> int:
        """Number of compared rows."""
        return self.base_size if self.base_ids is None else len(self.base_ids)

    def other_id(self, pos: int) -> int:
        """The other checkpoint's token id of compared row ``pos``."""
        return pos if self.other_ids is None else int(self.other_ids[pos])


@dataclass
class Comparison:
    """One checkpoint against the base."""

    checkpoint: CheckpointInfo
    x: float
    """Position on the series curve (the step when known, else the index)."""
    tensors: list[TensorResult] = field(default_factory=list)
    token_l1: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per vocabulary component: summary and top tokens of the per-token L1 change."""
    vocab: dict[str, Any] = field(default_factory=dict)
    """Vocabulary alignment summary and the new tokens' rows."""
    heatmap: str | None = None
    """File name of the heatmap, once written."""

    def by_component(self) -> dict[str, Stats]:
        """Stats per component (all layers together), in :data:`COMPONENTS` order."""
        out: dict[str, Stats] = {}
        for comp in (*COMPONENTS, "other"):
            members = [t.stats for t in self.tensors if t.component == comp]
            if members:
                out[comp] = Stats()
                for s in members:
                    out[comp].add(s)
        return out

    def layer_matrix(self, num_layers: int) -> dict[str, list[list[float | None]]]:
        """``metric -> [layer][component]`` over :data:`LAYER_COMPONENTS` (None: absent)."""
        cells: dict[tuple[int, str], Stats] = {}
        for t in self.tensors:
            if t.layer is not None and t.component in LAYER_COMPONENTS:
                cells.setdefault((t.layer, t.component), Stats()).add(t.stats)
        out: dict[str, list[list[float | None]]] = {"rel_change": [], "mean_abs_diff": []}
        for layer in range(num_layers):
            row_rel, row_mean = [], []
            for comp in LAYER_COMPONENTS:
                s = cells.get((layer, comp))
                row_rel.append(None if s is None else s.rel_change)
                row_mean.append(None if s is None else s.mean_abs_diff)
            out["rel_change"].append(row_rel)
            out["mean_abs_diff"].append(row_mean)
        return out

    def to_dict(self, num_layers: int) -> dict[str, Any]:
        """JSON-ready dict (see docs/analysis.md for the schema)."""
        return {
            "checkpoint": self.checkpoint.to_dict(),
            "x": self.x,
            "heatmap": self.heatmap,
            "by_component": {k: s.to_dict() for k, s in self.by_component().items()},
            "by_layer": {"components": list(LAYER_COMPONENTS), **self.layer_matrix(num_layers)},
            "token_l1": self.token_l1,
            "vocab": self.vocab,
            "tensors": [t.to_dict() for t in self.tensors],
        }


@dataclass
class DivergenceReport:
    """Every checkpoint of a series against the base."""

    base: CheckpointInfo
    arch: dict[str, Any]
    comparisons: list[Comparison]
    x_label: str
    """``step`` when every compared checkpoint's step is known, else ``index``."""
    series_plot: str | None = None
    """File name of the series curve, once written."""

    @property
    def num_layers(self) -> int:
        """Decoder layers of the compared architecture."""
        return int(self.arch["num_layers"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see docs/analysis.md for the schema)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "base": self.base.to_dict(),
            "arch": self.arch,
            "components": list(COMPONENTS),
            "layer_components": list(LAYER_COMPONENTS),
            "x_label": self.x_label,
            "series_plot": self.series_plot,
            "comparisons": [c.to_dict(self.num_layers) for c in self.comparisons],
        }


def check_compatible(base: WeightSource, other: WeightSource) -> None:
    """Raise DivergenceError naming the first architecture field the two checkpoints differ in."""
    for name in _ARCH_FIELDS:
        a, b = getattr(base.arch, name), getattr(other.arch, name)
        if a != b:
            raise DivergenceError(
                f"different architectures: {name} is {a!r} in {base.path} but {b!r} in {other.path}"
            )


def align_vocab(base: WeightSource, other: WeightSource) -> VocabAlignment:
    """Match the other checkpoint's vocabulary rows to the base's by token string.

    Identical vocabularies (same size, and same token -> id map when both have
    tokenizers) compare row by row.

    Raises:
        DivergenceError: the vocabulary sizes differ and a checkpoint has no tokenizer.
    """
    vb, vo = base.arch.vocab_size, other.arch.vocab_size
    if base.tokenizer_dir is None or other.tokenizer_dir is None:
        if vb == vo:
            return VocabAlignment(vb, vo, None, None)
        lacking = base if base.tokenizer_dir is None else other
        raise DivergenceError(
            f"vocabulary sizes differ ({vb} in {base.path}, {vo} in {other.path}) and "
            f"{lacking.path} has no tokenizer files to match the rows by token"
        )
    base_vocab = {s: i for s, i in base.tokenizer().get_vocab().items() if i < vb}
    other_vocab = {s: i for s, i in other.tokenizer().get_vocab().items() if i < vo}
    pairs = sorted((i, base_vocab[s]) for s, i in other_vocab.items() if s in base_vocab)
    new_ids = sorted(i for s, i in other_vocab.items() if s not in base_vocab)
    removed = sum(1 for s in base_vocab if s not in other_vocab)
    if vb == vo and len(pairs) == vb and all(i == j for i, j in pairs):
        return VocabAlignment(vb, vo, None, None)
    other_ids = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    base_ids = torch.tensor([j for _, j in pairs], dtype=torch.long)
    return VocabAlignment(vb, vo, base_ids, other_ids, new_ids, removed)


def tensor_diff(
    base: torch.Tensor,
    other: torch.Tensor,
    base_rows: torch.Tensor | None = None,
    other_rows: torch.Tensor | None = None,
    row_l1: bool = False,
) -> tuple[Stats, torch.Tensor | None]:
    """Divergence sums of ``other - base``, in float64, a block of rows at a time.

    Args:
        base: base tensor.
        other: the same tensor of the other checkpoint.
        base_rows: compare only these base rows (vocabulary alignment) ...
        other_rows: ... against these rows of ``other``.
        row_l1: also return Σ over each row of |ΔW| (per-token L1 for vocabulary tensors).

    Returns:
        The sums, and the per-row L1 (float64, one entry per compared row) or None.
    """
    n = base.shape[0] if base_rows is None else len(base_rows)
    row_numel = max(1, base[0].numel()) if base.dim() > 1 else base.numel() or 1
    step = max(1, _CHUNK_ELEMENTS // row_numel) if base.dim() > 1 else max(n, 1)
    stats = Stats()
    l1_parts = []
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        b = base[lo:hi] if base_rows is None else base[base_rows[lo:hi]]
        o = other[lo:hi] if other_rows is None else other[other_rows[lo:hi]]
        b = b.double()
        d = o.double() - b
        a = d.abs()
        stats.numel += d.numel()
        stats.abs_sum += float(a.sum())
        stats.sq_diff += float((d * d).sum())
        stats.sq_base += float((b * b).sum())
        if d.numel():
            stats.max_abs = max(stats.max_abs, float(a.max()))
        if row_l1:
            l1_parts.append(a.reshape(a.shape[0], -1).sum(dim=1))
    l1 = torch.cat(l1_parts) if row_l1 and l1_parts else None
    return stats, l1


def _token_entry(src: WeightSource, token_id: int, value: float) -> dict[str, Any]:
    tok = src.tokenizer()
    entry: dict[str, Any] = {"id": token_id, "l1": value, "token": None, "text": None}
    if tok is not None:
        entry["token"] = tok.convert_ids_to_tokens(token_id)
        entry["text"] = tok.decode([token_id])
    return entry


def _token_l1_summary(
    l1: torch.Tensor, align: VocabAlignment, src: WeightSource, top_k: int
) -> dict[str, Any]:
    changed = int((l1 > 0).sum())
    k = min(top_k, changed)  # unchanged rows are not listed
    values, positions = torch.topk(l1, k) if k else (l1[:0], l1[:0].long())
    return {
        "rows": len(l1),
        "mean": float(l1.mean()) if len(l1) else 0.0,
        "max": float(l1.max()) if len(l1) else 0.0,
        "changed_rows": changed,
        "top": [
            _token_entry(src, align.other_id(int(p)), float(v))
            for v, p in zip(values.tolist(), positions.tolist())
        ],
    }


def _row_l1(t: torch.Tensor, ids: list[int] | None = None) -> torch.Tensor:
    """Σ_h |t[row, h]| per row (of ``ids``, or all rows), in float64, a block at a time."""
    n = t.shape[0] if ids is None else len(ids)
    step = max(1, _CHUNK_ELEMENTS // max(1, t[0].numel()))
    index = None if ids is None else torch.tensor(ids, dtype=torch.long)
    parts = []
    for lo in range(0, n, step):
        block = t[lo : lo + step] if index is None else t[index[lo : lo + step]]
        parts.append(block.double().abs().sum(dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _new_rows_summary(
    t: torch.Tensor, base_t: torch.Tensor, align: VocabAlignment
) -> dict[str, Any]:
    l1 = _row_l1(t, align.new_ids)
    return {
        "count": len(align.new_ids),
        "mean_abs": float(l1.sum()) / (len(l1) * t.shape[1]) if len(l1) else 0.0,
        "mean_row_l1": float(l1.mean()) if len(l1) else 0.0,
        "base_mean_row_l1": float(_row_l1(base_t).mean()),
    }


def _compare_pieces(
    comp: Comparison,
    names: Sequence[str],
    base_pieces: list[torch.Tensor],
    pieces: list[torch.Tensor],
    base: WeightSource,
    other: WeightSource,
    align: VocabAlignment,
    top_k: int,
) -> None:
    for name, b, o in zip(names, base_pieces, pieces):
        component, layer = component_of(name)
        if name in VOCAB_COMPONENTS:
            if b.shape[1:] != o.shape[1:]:
                raise DivergenceError(
                    f"tensor {name!r}: shape {tuple(b.shape)} in {base.path} but "
                    f"{tuple(o.shape)} in {other.path}"
                )
            stats, l1 = tensor_diff(b, o, align.base_ids, align.other_ids, row_l1=True)
            assert l1 is not None
            shape = (align.shared, *b.shape[1:])
            comp.token_l1[component] = _token_l1_summary(l1, align, other, top_k)
            if align.new_ids:
                comp.vocab.setdefault("new_rows", {})[component] = _new_rows_summary(o, b, align)
        else:
            if b.shape != o.shape:
                raise DivergenceError(
                    f"tensor {name!r}: shape {tuple(b.shape)} in {base.path} but "
                    f"{tuple(o.shape)} in {other.path}"
                )
            stats, _ = tensor_diff(b, o)
            shape = tuple(b.shape)
        comp.tensors.append(TensorResult(name, component, layer, shape, stats))


def compute_divergence(
    paths: Sequence[str | os.PathLike],
    *,
    labels: Sequence[str] | None = None,
    top_k: int = 20,
    progress: bool = True,
) -> DivergenceReport:
    """Compare ``paths[1:]`` each against the base ``paths[0]``.

    Args:
        paths: checkpoints (HF directories, megatron_lang checkpoints, run folders);
            the first is the base.
        labels: names for the checkpoints in tables and plots (default: folder names).
        top_k: tokens listed per vocabulary tensor, by per-token L1 change.
        progress: show a tqdm progress bar over tensors.

    Raises:
        DivergenceError: fewer than two checkpoints, a missing or unreadable checkpoint,
            different architectures, a missing tensor or a shape mismatch.
    """
    from tqdm.auto import tqdm

    if len(paths) < 2:
        raise DivergenceError("need a base checkpoint and at least one checkpoint to compare")
    if labels is not None and len(labels) != len(paths):
        raise DivergenceError(f"{len(labels)} labels given for {len(paths)} checkpoints")
    sources: list[WeightSource] = []
    try:
        for i, p in enumerate(paths):
            sources.append(WeightSource(p, labels[i] if labels else None))
        base, others = sources[0], sources[1:]
        for src in others:
            check_compatible(base, src)
        for src in sources:
            src.check()
        aligns = [align_vocab(base, src) for src in others]
        steps = [src.info.step for src in others]
        by_step = all(s is not None for s in steps)
        comps = [
            Comparison(src.info, float(steps[i]) if by_step else float(i + 1))  # type: ignore[arg-type]
            for i, src in enumerate(others)
        ]
        for c, a, src in zip(comps, aligns, others):
            c.vocab.update(
                base_size=a.base_size,
                size=a.size,
                shared=a.shared,
                new=len(a.new_ids),
                removed=a.removed,
                identical=a.base_ids is None,
            )
            if a.new_ids:
                c.vocab["new_tokens"] = [
                    _token_entry(src, i, 0.0)["token"] for i in a.new_ids[:top_k]
                ]
        names = list(base.conversions)
        bar = tqdm(
            total=len(names) * len(others), desc="divergence", unit="tensor", disable=not progress
        )
        with bar:
            for name in names:
                conv = base.conversions[name]
                bar.set_postfix_str(conv.hf[0], refresh=False)
                base_pieces = base.read(name)
                for src, comp, align in zip(others, comps, aligns):
                    pieces = src.read(name)
                    _compare_pieces(comp, conv.hf, base_pieces, pieces, base, src, align, top_k)
                    del pieces
                    bar.update(1)
                del base_pieces
    finally:
        for src in sources:
            src.close()
    log.info("compared %d checkpoint(s) against %s", len(others), base.path)
    return DivergenceReport(
        base=base.info,
        arch=base.arch.to_dict(),
        comparisons=comps,
        x_label="step" if by_step else "index",
    )


def format_table(report: DivergenceReport, top_k: int = 10) -> str:
    """Plain-text tables of the report (per component, top tokens, and the series)."""
    lines = [f"base: {report.base.label} ({report.base.kind}, vocab {report.base.vocab_size})"]
    for c in report.comparisons:
        step = f", step {c.checkpoint.step}" if c.checkpoint.step is not None else ""
        lines += ["", f"== {c.checkpoint.label} ({c.checkpoint.kind}{step}) vs base =="]
        lines.append(f"{'component':<22}{'mean|dW|':>12}{'rel dW':>12}{'max|dW|':>12}")
        for comp, s in c.by_component().items():
            lines.append(
                f"{comp:<22}{s.mean_abs_diff:>12.4e}{_fmt(s.rel_change):>12}{s.max_abs:>12.4e}"
            )
        v = c.vocab
        if not v.get("identical", True):
            lines.append(
                f"vocabulary: {v['shared']} shared rows, {v['new']} new, {v['removed']} removed"
            )
            for comp, r in v.get("new_rows", {}).items():
                lines.append(
                    f"  new {comp} rows: mean|W| {r['mean_abs']:.4e}, row L1 "
                    f"{r['mean_row_l1']:.4e} (base rows {r['base_mean_row_l1']:.4e})"
                )
        for comp, t in c.token_l1.items():
            lines.append(f"top tokens by {comp} L1 change (mean {t['mean']:.4e}):")
            if not t["top"]:
                lines.append("  (no row changed)")
            for rank, e in enumerate(t["top"][:top_k], 1):
                shown = repr(e["text"]) if e["text"] is not None else "?"
                lines.append(f"  {rank:>3}. {shown:<24} id {e['id']:<8} {e['l1']:.4e}")
    if len(report.comparisons) > 1:
        lines += ["", f"relative change by component over the series (x = {report.x_label})"]
        labels = [c.checkpoint.label for c in report.comparisons]
        w = max(12, *map(len, labels)) + 2
        lines.append(f"{'component':<22}" + "".join(f"{lab:>{w}}" for lab in labels))
        per = [c.by_component() for c in report.comparisons]
        for comp in per[0]:
            cells = [_fmt(p[comp].rel_change) if comp in p else "-" for p in per]
            lines.append(f"{comp:<22}" + "".join(f"{v:>{w}}" for v in cells))
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4e}"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "checkpoint"


def write_outputs(
    report: DivergenceReport, out_dir: str | os.PathLike, plots: bool = True
) -> list[Path]:
    """Write ``divergence.json``, a heatmap per compared checkpoint and (series) ``series.png``.

    Every file is written to a temporary name in ``out_dir`` and renamed into place.

    Returns:
        The files written.
    """
    from megatron_lang.analysis.plots import plot_layer_heatmap, plot_series

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        used: set[str] = set()
        for i, c in enumerate(report.comparisons):
            name = f"heatmap-{_safe(c.checkpoint.label)}.png"
            if name in used:
                name = f"heatmap-{i + 1:02d}-{_safe(c.checkpoint.label)}.png"
            used.add(name)
            matrix = c.layer_matrix(report.num_layers)["rel_change"]
            title = f"relative change ‖ΔW‖/‖W‖: {c.checkpoint.label} vs {report.base.label}"
            extra = {
                k: s.rel_change
                for k, s in c.by_component().items()
                if k in ("embeddings", "final_norm", "lm_head")
            }
            plot_layer_heatmap(matrix, list(LAYER_COMPONENTS), title, out / name, extra)
            c.heatmap = name
            written.append(out / name)
        if len(report.comparisons) > 1:
            xs = [0.0 if report.x_label == "index" else float(report.base.step or 0)]
            xs += [c.x for c in report.comparisons]
            per = [c.by_component() for c in report.comparisons]
            curves = {
                comp: [0.0] + [p[comp].rel_change for p in per]
                for comp in per[0]
                if all(comp in p for p in per)
            }
            plot_series(
                xs,
                curves,
                report.x_label,
                f"relative change vs {report.base.label}",
                out / "series.png",
            )
            report.series_plot = "series.png"
            written.append(out / "series.png")
    _atomic_write_text(out / "divergence.json", json.dumps(report.to_dict(), indent=2) + "\n")
    written.append(out / "divergence.json")
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written
