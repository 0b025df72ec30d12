"""PNG plots for the analysis reports (matplotlib's Agg canvas; no display, no pyplot state).

Each plot is rendered to a temporary file next to its destination and renamed
into place, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _value(v: float | None) -> float:
    return math.nan if v is None else float(v)


def plot_layer_heatmap(
    matrix: Sequence[Sequence[float | None]],
    columns: Sequence[str],
    title: str,
    path: str | os.PathLike,
    extra: Mapping[str, float | None] | None = None,
) -> Path:
    """Heatmap of a ``layers x components`` matrix (None cells are left blank).

    Args:
        matrix: one row per layer, one value per column.
        columns: column (component) names.
        title: figure title.
        path: PNG to write.
        extra: values of non-layer components, written under the plot.
    """
    import numpy as np

    data = np.array([[_value(v) for v in row] for row in matrix], dtype=float).reshape(
        len(matrix), len(columns)
    )
    n_layers = data.shape[0]
    fig = _figure(1.0 + 0.8 * len(columns), 1.8 + 0.32 * max(n_layers, 2))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(
        np.ma.masked_invalid(data), aspect="auto", cmap="viridis", interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="‖ΔW‖ / ‖W_base‖")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right")
    ticks = range(0, n_layers, max(1, n_layers // 16))
    ax.set_yticks(list(ticks))
    ax.set_yticklabels([str(t) for t in ticks])
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    if n_layers * len(columns) <= 160:
        finite = data[np.isfinite(data)]
        mid = float(finite.max() + finite.min()) / 2 if finite.size else 0.0
        for i in range(n_layers):
            for j in range(len(columns)):
                if np.isfinite(data[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{data[i, j]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if data[i, j] > mid else "white",
                    )
    if extra:
        note = ", ".join(f"{k} {_value(v):.3g}" for k, v in extra.items())
        ax.set_xlabel(f"component   (not per layer: {note})", fontsize=8)
    return save_figure(fig, path)


def plot_series(
    xs: Sequence[float],
    curves: Mapping[str, Sequence[float | None]],
    x_label: str,
    title: str,
    path: str | os.PathLike,
) -> Path:
    """One line per component: its value at each point of a checkpoint series.

    Args:
        xs: x positions (steps or indices), one per point.
        curves: component -> values, one per point.
        x_label: x-axis label.
        title: figure title.
        path: PNG to write.
    """
    from matplotlib import colormaps

    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab20"].colors
    values = [v for ys in curves.values() for v in map(_value, ys) if v > 0]
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(
            list(xs),
            [_value(y) for y in ys],
            marker="o",
            markersize=3,
            label=name,
            color=colors[(2 * i) % 20 + (2 * i) // 20 % 2],
            linestyle=("-", "--")[i % 2],
        )
    if values and max(values) > 100 * min(values):  # norms barely move, matrices do: log y
        ax.set_yscale("symlog", linthresh=min(values))
    ax.set_xlabel(x_label)
    ax.set_ylabel("‖ΔW‖ / ‖W_base‖")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return save_figure(fig, path)
