"""Training metrics: TensorBoard scalars on one rank, a compact console line, memory figures.

Tag names used by the trainer (``prefix/key``; constants below):

* ``train/loss``, ``train/loss/<source>``, ``train/lr``, ``train/grad_norm``,
  ``train/skipped_steps``;
* ``throughput/tokens_per_s``, ``throughput/tflops_per_gpu``, ``throughput/mfu``,
  ``throughput/hfu`` (with recomputation), ``throughput/step_time_s``;
* ``memory/<key>`` from :func:`memory_stats`;
* ``val/<set>/loss``, ``val/<set>/ppl`` per validation set (language).

:meth:`MetricsWriter.train_step` routes a step's values dict to the first three
groups; :meth:`MetricsWriter.scalars` writes any dict under one prefix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from megatron_lang.platform import get_logger

log = get_logger(__name__)

__all__ = [
    "CONSOLE_KEYS",
    "MetricsWriter",
    "format_console_line",
    "memory_stats",
]

# Keys of the values dict understood by format_console_line (also the tag suffixes).
LOSS = "loss"
LR = "lr"
GRAD_NORM = "grad_norm"
TOKENS_PER_S = "tokens_per_s"
TFLOPS_PER_GPU = "tflops_per_gpu"
MFU = "mfu"
HFU = "hfu"
SKIPPED_STEPS = "skipped_steps"
STEP_TIME_S = "step_time_s"
MEMORY_GB = "memory_gb"

_GB = 1024**3


def _fmt_int(v: float) -> str:
    return f"{int(round(v)):,}"


# key -> (label, formatter); console order.  mfu is a fraction, shown as percent.
_CONSOLE: tuple[tuple[str, str, Any], ...] = (
    (LOSS, "loss", lambda v: f"{v:.4f}"),
    (LR, "lr", lambda v: f"{v:.3e}"),
    (GRAD_NORM, "grad", lambda v: f"{v:.3f}"),
    (TOKENS_PER_S, "tok/s", _fmt_int),
    (TFLOPS_PER_GPU, "TFLOP/s/GPU", lambda v: f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"),
    (MFU, "MFU", lambda v: f"{100 * v:.1f}%"),
    (HFU, "HFU", lambda v: f"{100 * v:.1f}%"),
    (SKIPPED_STEPS, "skipped", lambda v: f"{int(v)}"),
    (MEMORY_GB, "mem", lambda v: f"{v:.2f} GB"),
    (STEP_TIME_S, "step", lambda v: f"{v:.3f} s"),
)
CONSOLE_KEYS: tuple[str, ...] = tuple(k for k, _, _ in _CONSOLE)
"""Keys :func:`format_console_line` places first, in this order."""

_THROUGHPUT_KEYS = frozenset({TOKENS_PER_S, TFLOPS_PER_GPU, MFU, HFU, STEP_TIME_S})
_MEMORY_KEYS = frozenset(
    {MEMORY_GB, "allocated_gb", "reserved_gb", "max_allocated_gb", "max_reserved_gb", "cpu_rss_gb"}
)


def _group_of(key: str) -> str:
    """TensorBoard prefix of a training-step key (see :meth:`MetricsWriter.train_step`)."""
    if key in _THROUGHPUT_KEYS:
        return "throughput"
    if key in _MEMORY_KEYS:
        return "memory"
    return "train"


# Memory keys, most telling first, used for the console's memory figure.
_MEMORY_FALLBACKS = ("max_allocated_gb", "max_reserved_gb", "allocated_gb", "cpu_rss_gb")


def format_console_line(step: int, total_steps: int, values: Mapping[str, float | None]) -> str:
    """One compact line, e.g. ``step 10/100 | loss 2.3456 | lr 3.000e-04 | grad 1.234 | ...``.

    Args:
        step: the step just finished.
        total_steps: steps in the run (0 or negative: unknown, only ``step N`` shown).
        values: figures by key; known keys (:data:`CONSOLE_KEYS`: ``loss``, ``lr``,
            ``grad_norm``, ``tokens_per_s``, ``tflops_per_gpu``, ``mfu`` and ``hfu`` as fractions,
            ``skipped_steps``, ``memory_gb``, ``step_time_s``) are shown first in that
            order with their own formats; when ``memory_gb`` is absent the
            :func:`memory_stats` keys stand in for it; any other key follows as
            ``key value``.  None values (e.g. MFU on an unknown device) are left out.
    """
    width = len(str(total_steps)) if total_steps > 0 else 0
    parts = [f"step {step:>{width}}/{total_steps}" if total_steps > 0 else f"step {step}"]
    shown = set(CONSOLE_KEYS)
    vals = dict(values)
    if vals.get(MEMORY_GB) is None:
        for k in _MEMORY_FALLBACKS:
            if vals.get(k) is not None:
                vals[MEMORY_GB] = vals[k]
                break
    shown.update(_MEMORY_FALLBACKS)
    for key, label, fmt in _CONSOLE:
        v = vals.get(key)
        if v is None:
            continue
        v = float(v)
        parts.append(f"{label} {fmt(v) if math.isfinite(v) else v}")
    for key, v in values.items():
        if key in shown or v is None:
            continue
        parts.append(f"{key} {float(v):.4g}")
    return " | ".join(parts)


def memory_stats(device: torch.device | int | None = None) -> dict[str, float]:
    """Memory in GB (2**30 bytes).

    With CUDA: ``allocated_gb``, ``reserved_gb``, ``max_allocated_gb``,
    ``max_reserved_gb`` of the current (or given) device.  Without CUDA: ``cpu_rss_gb``,
    the resident set size of this process (psutil; ``/proc`` or peak RSS if psutil is
    missing).
    """
    if torch.cuda.is_available():
        return {
            "allocated_gb": torch.cuda.memory_allocated(device) / _GB,
            "reserved_gb": torch.cuda.memory_reserved(device) / _GB,
            "max_allocated_gb": torch.cuda.max_memory_allocated(device) / _GB,
            "max_reserved_gb": torch.cuda.max_memory_reserved(device) / _GB,
        }
    return {"cpu_rss_gb": _cpu_rss_bytes() / _GB}


def _cpu_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    try:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MetricsWriter:
    """TensorBoard scalar writer that exists only on the rank that writes.

    The caller decides which rank writes (typically the last pipeline stage's
    first data/tensor-parallel rank, which holds the loss); on every other rank
    create it with ``enabled=False`` and every call is a no-op that touches no file.

    Example::

        writer = MetricsWriter(cfg.tensorboard_dir, enabled=is_logging_rank)
        writer.scalars(step, {"loss": 2.3, "lr": 3e-4}, prefix="train")
        writer.close()
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None,
        enabled: bool = True,
        flush_secs: int = 30,
        purge_step: int | None = None,
    ) -> None:
        """Open the event file (when enabled and ``log_dir`` is set).

        Args:
            log_dir: TensorBoard directory; None disables writing.
            enabled: False on ranks that must not write.
            flush_secs: how often the writer flushes on its own.
            purge_step: on resume, the step to continue from: events at or after it
                left by the interrupted run are hidden by TensorBoard.
        """
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._writer = None
        if enabled and self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(
                log_dir=str(self.log_dir), flush_secs=flush_secs, purge_step=purge_step
            )
            log.info("TensorBoard events in %s", self.log_dir)

    @property
    def enabled(self) -> bool:
        """True when this writer writes events."""
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, float | None], prefix: str = "") -> None:
        """Write ``values`` at ``step`` as tags ``prefix/key`` (``key`` without a prefix).

        None values are skipped; tensors and NumPy scalars are converted to float.
        """
        if self._writer is None:
            return
        head = prefix.strip("/")
        for key, value in values.items():
            if value is None:
                continue
            tag = f"{head}/{key}" if head else key
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def train_step(self, step: int, values: Mapping[str, float | None]) -> None:
        """Write one training step's figures, each under its group's prefix.

        ``tokens_per_s``, ``tflops_per_gpu``, ``mfu``, ``hfu`` and ``step_time_s`` go to
        ``throughput/``; ``memory_gb`` and the :func:`memory_stats` keys to ``memory/``;
        everything else (``loss``, ``loss/<source>``, ``lr``, ``grad_norm``,
        ``skipped_steps`` ...) to ``train/``.
        """
        if self._writer is None:
            return
        groups: dict[str, dict[str, float | None]] = {}
        for key, value in values.items():
            groups.setdefault(_group_of(key), {})[key] = value
        for prefix, group in groups.items():
            self.scalars(step, group, prefix=prefix)

    def flush(self) -> None:
        """Write pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; later calls are no-ops."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
