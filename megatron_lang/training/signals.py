"""Save-and-exit on SIGTERM / SIGUSR1 (SLURM preemption), agreed by all ranks.

The handler only sets a flag; the loop asks :meth:`ExitSignal.requested` after
each step, which all-reduces the flag so every rank stops at the same step.
"""

from __future__ import annotations

import signal

import torch.distributed as dist

from megatron_lang.platform.distributed import collective_tensor
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


class ExitSignal:
    """Catches the configured signals and reports them at step boundaries."""

    def __init__(self, names: list[str]):
        self.received: str | None = None
        self._previous = {}
        for name in names:
            sig = getattr(signal, name, None)
            if sig is None:
                raise ValueError(f"checkpoint.exit_signals: unknown signal {name!r}")
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def requested(self) -> bool:
        """True on every rank when any rank received a signal."""
        flag = collective_tensor([1.0 if self.received else 0.0])
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            log.warning(
                "exit signal %s received: saving a checkpoint and exiting",
                self.received or "(another rank)",
            )
            return True
        return False

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
