"""Run downstream tasks on models through lm-evaluation-harness, offline.

lm-eval is used as a library (``lm_eval.simple_evaluate`` with its ``hf`` model and a
``TaskManager`` whose ``include_path`` is the task folder of
:func:`megatron_lang.downstream.data.write_task_data`). ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` are set for the run: the tasks read local JSONL only, and a
task that would reach the hub fails instead of hanging.

Models are HF directories; a megatron_lang checkpoint (or run folder) is first exported
to HF with :func:`megatron_lang.conversion.megatron_to_hf` into the output folder.
Chat models (``chat=True``) get ``apply_chat_template``: each prompt is the user turn
of the model's own template, with the generation prompt.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megatron_lang.downstream.data import DownstreamDataError, read_manifest
from megatron_lang.platform import get_logger

log = get_logger(__name__)

MAIN_METRIC = {
    "bpb": ("bits_per_byte", False),
    "translate": ("chrf", True),
    "scala": ("acc_norm", True),
    "section": ("acc", True),
}
"""Task kind (from its name) -> (headline metric, higher is better)."""


def task_kind(name: str) -> str:
    for kind in MAIN_METRIC:
        if f"_{kind}" in name or name.endswith(kind):
            return kind
    raise DownstreamDataError(f"task {name}: unknown kind (expected one of {list(MAIN_METRIC)})")


@dataclass
class ModelSpec:
    """A model to evaluate: its label, path and whether it is a chat model."""

    label: str
    path: str
    chat: bool = False


@dataclass
class Results:
    """metric values per model and task: ``values[label][task][metric] = (value, stderr)``."""

    tasks: list[str]
    models: list[ModelSpec]
    values: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = field(
        default_factory=dict
    )
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def main(self, label: str, task: str) -> float | None:
        metric, _ = MAIN_METRIC[task_kind(task)]
        got = self.values.get(label, {}).get(task, {}).get(metric)
        return None if got is None else got[0]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No hub access while lm-eval runs (restored afterwards)."""
    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hf_dir_for(spec: ModelSpec, export_root: Path) -> Path:
    """The HF directory to evaluate: the path itself, or a Megatron checkpoint (or run
    folder's latest) exported to ``export_root/<label>`` once."""
    from megatron_lang.analysis.eval_data import EvaluationError
    from megatron_lang.analysis.perplexity import resolve_model_path

    try:
        path, kind = resolve_model_path(spec.path)
    except EvaluationError as e:
        raise DownstreamDataError(f"{spec.label}: {e}") from None
    if kind == "hf":
        if path.is_file():
            raise DownstreamDataError(
                f"{spec.label}={path}: lm-eval loads HF directories; convert the GGUF with "
                f"tools/convert_hf/gguf_to_hf.py first"
            )
        return path
    from megatron_lang.conversion import megatron_to_hf

    out = export_root / spec.label
    stamp = out / ".exported_from"
    if not (stamp.is_file() and stamp.read_text() == str(path.resolve())):
        log.info("%s: exporting %s to HF (%s)", spec.label, path, out)
        megatron_to_hf(path, out, overwrite=True)
        stamp.write_text(str(path.resolve()))
    return out


def run_tasks(
    models: Sequence[ModelSpec],
    data_dir: str | os.PathLike,
    tasks: Sequence[str] | None = None,
    *,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    batch_size: int = 4,
    max_length: int = 1024,
    device: str | None = None,
    seed: int = 1234,
) -> Results:
    """Every task on every model; progress in the log, one line per model and task.

    Args:
        models: the models, in the order of the report (before → after).
        data_dir: a folder of :func:`megatron_lang.downstream.data.write_task_data`.
        tasks: task names (default: all in the folder).
        out_dir: where exports of Megatron checkpoints go (``exports/<label>``).
        limit: documents per task (lm-eval's ``limit``; None: all).
        batch_size: lm-eval batch size.
        max_length: the model's context in tokens (longer documents are rolled over).
        device: ``cpu``, ``cuda``... (default: CUDA when available).
        seed: lm-eval's seeds (sampling is greedy; this fixes few-shot order).
    """
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    manifest = read_manifest(data_dir)
    have = list(manifest["tasks"])
    tasks = list(tasks or have)
    unknown = [t for t in tasks if t not in have]
    if unknown:
        raise DownstreamDataError(f"{data_dir} has no task {unknown}; it has {have}")
    for t in tasks:
        task_kind(t)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = Results(tasks, list(models))
    results.settings = {
        "data": str(Path(data_dir).resolve()), "limit": limit, "batch_size": batch_size,
        "max_length": max_length, "device": device, "seed": seed,
        "lm_eval": getattr(lm_eval, "__version__", "?"),
    }  # fmt: skip
    manager = TaskManager(include_path=str(Path(data_dir).resolve() / "tasks"))
    export_root = Path(out_dir) / "exports"
    for i, spec in enumerate(models, 1):
        hf_dir = hf_dir_for(spec, export_root)
        log.info("[%d/%d] %s (%s%s): %s", i, len(models), spec.label, hf_dir,
                 ", chat template" if spec.chat else "", " ".join(tasks))  # fmt: skip
        t0 = time.perf_counter()
        with offline():
            out = lm_eval.simple_evaluate(
                model="hf",
                model_args={
                    "pretrained": str(hf_dir), "dtype": "float32", "max_length": max_length,
                    "trust_remote_code": False,
                },
                tasks=tasks,
                task_manager=manager,
                batch_size=batch_size,
                device=device,
                limit=limit,
                apply_chat_template=spec.chat,
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed,
                log_samples=False,
            )  # fmt: skip
        results.seconds[spec.label] = time.perf_counter() - t0
        per_task = {}
        for task in tasks:
            got = out["results"].get(task, {})
            metrics = {}
            for key, value in got.items():
                if "," not in key or "_stderr" in key:
                    continue
                metric = key.split(",", 1)[0]
                err = got.get(f"{metric}_stderr,{key.split(',', 1)[1]}")
                err = float(err) if isinstance(err, (int, float)) and math.isfinite(err) else None
                metrics[metric] = (float(value), err)
            per_task[task] = metrics
            main = MAIN_METRIC[task_kind(task)][0]
            if main in metrics:
                log.info("  %s %s: %s %.4f", spec.label, task, main, metrics[main][0])
        results.values[spec.label] = per_task
        log.info("  %s done in %.0f s", spec.label, results.seconds[spec.label])
    return results
