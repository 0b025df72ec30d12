"""One report of a language-adaptation run: fertility, loss per word before/after, samples, plots.

Reads what the workflow's tools wrote — ``fertility.py --json``, ``evaluate.py --output``,
the trainer's metrics JSONL, ``generate.py --json`` and a timings file — and produces a
Markdown/console table, a JSON summary and PNG plots (training loss by stage and source,
validation loss per language, loss per word per model and language). ``examples/demo.sh``
ends with it; it works on any run whose reports follow those formats.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class SummaryError(ValueError):
    """A report file is missing or malformed (the message names the file and the key)."""


@dataclass
class Summary:
    """Everything the report shows (JSON-ready)."""

    fertility: list[dict[str, Any]] = field(default_factory=list)
    """``{corpus, tokenizer, vocab_size, tokens_per_word, chars_per_token}`` rows."""
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    """``{model, language, loss_per_word, bits_per_word, tokens_per_word, tokens, words}`` rows."""
    training: dict[str, Any] = field(default_factory=dict)
    """First/last training loss, steps per stage, validation losses at first/last evaluation."""
    generations: list[dict[str, Any]] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)
    """``{language, before, after, before_loss_per_word, after_loss_per_word, improved}``."""
    plots: list[str] = field(default_factory=list)


def _read_json(path: str | os.PathLike, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise SummaryError(f"{what} report {p} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SummaryError(f"{what} report {p}: not JSON ({e})") from None


def _need(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise SummaryError(f"{where}: key {key!r} is missing")
    return obj[key]


def read_fertility(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``fertility.py --json`` report."""
    rep = _read_json(path, "fertility")
    toks = _need(rep, "tokenizers", str(path))
    rows = []
    for i, r in enumerate(_need(rep, "results", str(path))):
        where = f"{path}: results[{i}]"
        name = _need(r, "tokenizer", where)
        rows.append(
            {
                "corpus": _need(r, "corpus", where),
                "tokenizer": name,
                "vocab_size": toks.get(name, {}).get("vocab_size"),
                "tokens_per_word": _need(r, "fertility_whitespace", where),
                "chars_per_token": _need(r, "chars_per_token", where),
            }
        )
    return rows


def read_evaluation(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an ``evaluate.py --output`` report."""
    rep = _read_json(path, "evaluation")
    keys = ("model", "language", "loss_per_word", "bits_per_word", "tokens_per_word")
    rows = []
    for i, r in enumerate(_need(rep, "results", str(path))):
        where = f"{path}: results[{i}]"
        rows.append({k: _need(r, k, where) for k in (*keys, "tokens", "words")})
    return rows


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """Training rows (with ``loss``) and validation rows (``valid/...`` keys) of a metrics JSONL."""
    p = Path(path)
    if not p.is_file():
        raise SummaryError(f"metrics file {p} does not exist")
    train, valid = [], []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SummaryError(f"{p}:{n}: not JSON ({e})") from None
        if "loss" in row:
            train.append(row)
        elif any(k.startswith("valid/") for k in row):
            valid.append(row)
    return train, valid


def _valid_losses(row: dict) -> dict[str, float]:
    # valid/<language>/<source>/loss
    return {
        k.split("/")[1]: v for k, v in row.items() if k.startswith("valid/") and k.endswith("/loss")
    }


def training_summary(train: list[dict], valid: list[dict]) -> dict[str, Any]:
    """First/last loss, steps per stage and validation losses at the first/last evaluation."""
    if not train:
        return {}
    stages: dict[int, int] = {}
    for r in train:
        stages[r.get("stage", 0)] = stages.get(r.get("stage", 0), 0) + 1
    out: dict[str, Any] = {
        "steps": train[-1]["step"],
        "first_loss": train[0]["loss"],
        "last_loss": train[-1]["loss"],
        "steps_per_stage": [stages[k] for k in sorted(stages)],
        "mean_step_time_s": sum(r.get("step_time_s", 0.0) for r in train) / len(train),
        "tokens_per_s": train[-1].get("tokens_per_s"),
    }
    if valid:
        out["valid_first"] = {"step": valid[0]["step"], **_valid_losses(valid[0])}
        out["valid_last"] = {"step": valid[-1]["step"], **_valid_losses(valid[-1])}
    return out


def read_timings(path: str | os.PathLike) -> list[tuple[str, float]]:
    """``step<TAB>seconds`` lines (the demo writes one per step)."""
    p = Path(path)
    if not p.is_file():
        raise SummaryError(f"timings file {p} does not exist")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, _, secs = line.rpartition("\t")
        try:
            out.append((name, float(secs)))
        except ValueError:
            raise SummaryError(f"{p}:{n}: expected 'step<TAB>seconds', got {line!r}") from None
    return out


def verdict(evaluation: list[dict], language: str, before: str, after: str) -> dict[str, Any]:
    """Whether ``after`` has a lower loss per word than ``before`` on ``language``.

    Raises:
        SummaryError: the evaluation has no row for one of the two models on ``language``.
    """
    by = {(r["model"], r["language"]): r for r in evaluation}
    for m in (before, after):
        if (m, language) not in by:
            have = sorted({f"{a}/{b}" for a, b in by})
            raise SummaryError(f"evaluation has no result for model {m!r} on {language!r}: {have}")
    b, a = by[(before, language)]["loss_per_word"], by[(after, language)]["loss_per_word"]
    return {
        "language": language,
        "before": before,
        "after": after,
        "before_loss_per_word": b,
        "after_loss_per_word": a,
        "relative_change": (a - b) / b if b else math.nan,
        "improved": a < b,
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def format_summary(s: Summary) -> str:
    """The report as Markdown (readable on a console too)."""
    parts = ["# Language adaptation: summary", ""]
    if s.fertility:
        corpora = list(dict.fromkeys(r["corpus"] for r in s.fertility))
        toks = list(dict.fromkeys(r["tokenizer"] for r in s.fertility))
        by = {(r["corpus"], r["tokenizer"]): r for r in s.fertility}
        rows = []
        for t in toks:
            vocab = next((r["vocab_size"] for r in s.fertility if r["tokenizer"] == t), None)
            rows.append(
                [t, str(vocab)]
                + [f"{by[(c, t)]['tokens_per_word']:.3f}" if (c, t) in by else "-" for c in corpora]
            )
        parts += [
            "## Fertility (tokens per word, held-out text)",
            "",
            _table(["tokenizer", "vocab", *corpora], rows),
            "",
        ]
    if s.evaluation:
        langs = list(dict.fromkeys(r["language"] for r in s.evaluation))
        models = list(dict.fromkeys(r["model"] for r in s.evaluation))
        by = {(r["model"], r["language"]): r for r in s.evaluation}
        rows = []
        for m in models:
            row = [m]
            for lang in langs:
                r = by.get((m, lang))
                row += (
                    [f"{r['loss_per_word']:.3f}", f"{r['tokens_per_word']:.2f}"]
                    if r
                    else ["-", "-"]
                )
            rows.append(row)
        header = ["model"] + [
            h for lang in langs for h in (f"{lang} loss/word", f"{lang} tok/word")
        ]
        parts += [
            "## Loss per word (nats; comparable across tokenizers)",
            "",
            _table(header, rows),
            "",
        ]
    if s.verdict:
        v = s.verdict
        parts += [
            f"**{v['language']} loss per word: {v['before']} {v['before_loss_per_word']:.3f} -> "
            f"{v['after']} {v['after_loss_per_word']:.3f} ({100 * v['relative_change']:+.1f} %): "
            f"{'lower after training' if v['improved'] else 'NOT lower after training'}**",
            "",
        ]
    if s.training:
        t = s.training
        lines = [
            f"- {t['steps']} steps in {len(t['steps_per_stage'])} stage(s) "
            f"{t['steps_per_stage']}; training loss {t['first_loss']:.3f} -> {t['last_loss']:.3f}; "
            f"{t['mean_step_time_s']:.1f} s/step"
        ]
        if "valid_first" in t:
            first, last = t["valid_first"], t["valid_last"]
            langs = [k for k in last if k != "step"]
            lines.append(
                f"- validation loss per token, step {first['step']} -> {last['step']}: "
                + ", ".join(f"{k} {first.get(k, math.nan):.3f} -> {last[k]:.3f}" for k in langs)
            )
        parts += ["## Training", "", *lines, ""]
    if s.generations:
        parts += ["## Greedy continuations of the exported HF model", ""]
        parts += [f"- {g['prompt']!r} -> {g['continuation']!r}" for g in s.generations]
        parts += [""]
    if s.timings:
        total = sum(x for _, x in s.timings)
        rows = [[n, f"{x:.0f}"] for n, x in s.timings] + [["total", f"{total:.0f}"]]
        parts += ["## Time per step (s)", "", _table(["step", "seconds"], rows), ""]
    if s.plots:
        parts += ["## Plots", "", *[f"- {p}" for p in s.plots], ""]
    return "\n".join(parts)


def plot_training(train: list[dict], valid: list[dict], path: str | os.PathLike) -> Path:
    """Training loss (all and per source) with stage boundaries, and validation loss per language."""
    from megatron_lang.analysis.plots import _figure, save_figure

    fig = _figure(10, 4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    steps = [r["step"] for r in train]
    ax1.plot(steps, [r["loss"] for r in train], label="all", color="black")
    sources = sorted({k for r in train for k in r if k.startswith("loss/")})
    for k in sources:
        ax1.plot(steps, [r.get(k, math.nan) for r in train], label=k[5:], alpha=0.7)
    for a, b in zip(train, train[1:]):
        if a.get("stage") != b.get("stage"):
            ax1.axvline(a["step"] + 0.5, color="grey", linestyle="--", linewidth=1)
            ax2.axvline(a["step"] + 0.5, color="grey", linestyle="--", linewidth=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss per token")
    ax1.set_title("training loss (dashed: stage boundary)", fontsize=9)
    ax1.legend(fontsize=7)
    ax1.grid(True, alpha=0.3)
    losses = [(r["step"], _valid_losses(r)) for r in valid]
    langs = sorted({k for _, v in losses for k in v})
    for lang in langs:
        pts = [(step, v[lang]) for step, v in losses if lang in v]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lang)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation loss per token")
    ax2.set_title("validation loss per language", fontsize=9)
    if langs:
        ax2.legend(fontsize=7)
    ax2.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_loss_per_word(evaluation: list[dict], path: str | os.PathLike) -> Path:
    """Grouped bars: loss per word of every model on every language."""
    from megatron_lang.analysis.plots import _figure, save_figure

    langs = list(dict.fromkeys(r["language"] for r in evaluation))
    models = list(dict.fromkeys(r["model"] for r in evaluation))
    by = {(r["model"], r["language"]): r["loss_per_word"] for r in evaluation}
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + i * width for j in range(len(langs))]
        ax.bar(xs, [by.get((m, lang), math.nan) for lang in langs], width, label=m)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(langs))], langs)
    ax.set_ylabel("loss per word (nats)")
    ax.set_title("held-out loss per word", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


def build_summary(
    *,
    fertility: str | os.PathLike | None = None,
    evaluation: str | os.PathLike | None = None,
    metrics: str | os.PathLike | None = None,
    generation: str | os.PathLike | None = None,
    timings: str | os.PathLike | None = None,
    language: str | None = None,
    before: str | None = None,
    after: str | None = None,
    plots_dir: str | os.PathLike | None = None,
) -> Summary:
    """Read the reports that are given and (with ``plots_dir``) draw the plots.

    ``language``, ``before`` and ``after`` (model labels of the evaluation) add the
    verdict: is the loss per word on ``language`` lower after than before?

    Raises:
        SummaryError: a given report is missing or malformed.
    """
    s = Summary()
    if fertility:
        s.fertility = read_fertility(fertility)
    if evaluation:
        s.evaluation = read_evaluation(evaluation)
        if language and before and after:
            s.verdict = verdict(s.evaluation, language, before, after)
    train = valid = []
    if metrics:
        train, valid = read_metrics(metrics)
        s.training = training_summary(train, valid)
    if generation:
        s.generations = _need(_read_json(generation, "generation"), "generations", str(generation))
    if timings:
        s.timings = read_timings(timings)
    if plots_dir:
        out = Path(plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        if train:
            plot_training(train, valid, out / "training_loss.png")
        if s.evaluation:
            plot_loss_per_word(s.evaluation, out / "loss_per_word.png")
        s.plots = sorted(str(p) for p in out.glob("*.png"))  # with those other tools drew
    return s


def write_summary(s: Summary, markdown: str | os.PathLike, json_path: str | os.PathLike) -> None:
    """Write the Markdown report and the JSON summary (each atomically)."""
    for path, text in (
        (Path(markdown), format_summary(s) + "\n"),
        (Path(json_path), json.dumps(asdict(s), indent=1, ensure_ascii=False) + "\n"),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
