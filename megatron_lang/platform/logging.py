"""Rank-aware logging: the library never prints, it logs.

By default only global rank 0 emits INFO and below; every rank emits warnings
and errors, prefixed with its rank.  ``get_logger(__name__)`` everywhere.
"""

from __future__ import annotations

import logging
import os
import sys

_ROOT = "megatron_lang"
_CONFIGURED = False


def _env_rank() -> int:
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            try:
                return int(os.environ[key])
            except ValueError:
                pass
    return 0


class _RankFilter(logging.Filter):
    """Adds ``record.rank`` and drops sub-warning records on non-zero ranks."""

    def __init__(self, all_ranks: bool):
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        rank = current_rank()
        record.rank = rank
        return self.all_ranks or rank == 0 or record.levelno >= logging.WARNING


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A handler bound to the stream of its creation keeps writing to it after it was
    replaced and closed (pytest's capture, notebooks); looking it up per record
    does not.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def current_rank() -> int:
    """Global rank of this process (the launcher's rank when torch.distributed is not up).

    torch is never imported here: processes that do not use it (data workers)
    stay light.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return dist.get_rank()
        except Exception:  # pragma: no cover - torch half-imported or broken
            pass
    return _env_rank()


def setup_logging(level: str | int = "INFO", all_ranks: bool = False) -> None:
    """Configure the ``megatron_lang`` logger once (console, rank-prefixed).

    Args:
        level: logging level name or number.
        all_ranks: when True every rank logs INFO, not only rank 0.
    """
    global _CONFIGURED
    logger = logging.getLogger(_ROOT)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_megatron_lang", False):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler._megatron_lang = True  # type: ignore[attr-defined]
    handler.addFilter(_RankFilter(all_ranks))
    handler.setFormatter(
        logging.Formatter(
            "[%(asctime)s rank%(rank)s %(levelname)s %(name)s] %(message)s", "%H:%M:%S"
        )
    )
    logger.addHandler(handler)
    logger.propagate = False
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    """Logger under the ``megatron_lang`` hierarchy, configured on first use."""
    if not _CONFIGURED:
        setup_logging(os.environ.get("MEGATRON_LANG_LOG_LEVEL", "INFO"))
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)
