"""The downstream results as a Markdown table, JSON and a before/after plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

from megatron_lang.downstream.harness import MAIN_METRIC, Results, task_kind

REPORT_FORMAT = "megatron_lang.downstream_results/1"


def to_dict(results: Results) -> dict:
    return {
        "format": REPORT_FORMAT,
        "settings": results.settings,
        "models": [{"label": m.label, "path": m.path, "chat": m.chat} for m in results.models],
        "tasks": {
            t: {
                "metric": MAIN_METRIC[task_kind(t)][0],
                "higher_is_better": MAIN_METRIC[task_kind(t)][1],
            }
            for t in results.tasks
        },
        "results": {
            label: {
                task: {m: {"value": v, "stderr": e} for m, (v, e) in metrics.items()}
                for task, metrics in per_task.items()
            }
            for label, per_task in results.values.items()
        },
        "seconds": results.seconds,
    }


def format_table(results: Results) -> str:
    """Tasks down, models across: the headline metric (± stderr where lm-eval gives one);
    the best model of each row in bold, and the change of the last model vs the first."""
    labels = [m.label for m in results.models]
    head = ["task", "metric", *labels]
    if len(labels) > 1:
        head.append(f"{labels[-1]} vs {labels[0]}")
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for task in results.tasks:
        metric, higher = MAIN_METRIC[task_kind(task)]
        vals = [results.main(label, task) for label in labels]
        known = [v for v in vals if v is not None]
        best = (max if higher else min)(known) if known else None
        cells = []
        for label, v in zip(labels, vals):
            if v is None:
                cells.append("—")
                continue
            err = results.values[label][task].get(metric, (None, None))[1]
            text = f"{v:.4f}" + (f" ± {err:.4f}" if err else "")
            cells.append(f"**{text}**" if v == best and len(known) > 1 else text)
        row = [task, metric + (" ↑" if higher else " ↓"), *cells]
        if len(labels) > 1:
            a, b = vals[0], vals[-1]
            row.append(f"{b - a:+.4f}" if a is not None and b is not None else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: Results, path: str | os.PathLike) -> Path:
    """One panel per task: the headline metric across the models, in their order."""
    from megatron_lang.analysis.plots import _figure, save_figure

    labels = [m.label for m in results.models]
    n = len(results.tasks)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure(3.6 * cols, 2.8 * rows)
    for i, task in enumerate(results.tasks):
        metric, higher = MAIN_METRIC[task_kind(task)]
        ax = fig.add_subplot(rows, cols, i + 1)
        vals = [results.main(label, task) for label in labels]
        xs = [j for j, v in enumerate(vals) if v is not None]
        ax.plot(xs, [vals[j] for j in xs], marker="o")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, fontsize=7)
        ax.set_title(f"{task}\n{metric} ({'higher' if higher else 'lower'} is better)", fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(results: Results, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``results.md``, ``results.json`` and ``results.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "json": out / "results.json", "png": out / "results.png"}
    for key, text in (
        ("md", format_table(results) + "\n"),
        ("json", json.dumps(to_dict(results), indent=2) + "\n"),
    ):
        tmp = paths[key].with_name(f".{paths[key].name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    plot(results, paths["png"])
    return paths
