"""Fault injection for crash-consistency tests: SIGKILL this rank at a named point of a save.

``MEGATRON_LANG_KILL_AT=<point>@<step>[:<rank>]`` (unset in real runs) makes rank
``<rank>`` (default 0) log the point and kill itself with SIGKILL when a save of
step ``<step>`` reaches ``<point>``. SIGKILL cannot be caught, so what is on disk
afterwards is exactly what a power cut or an OOM kill at that point leaves; the
tests then resume and check the run. Points, in the order a save passes them:

* ``save-written``: this rank's files are written (before the barrier that waits for the
  others), ``iter_N.tmp`` not renamed;
* ``save-renamed``: ``iter_N`` is in place, ``latest`` still names the previous one;
* ``save-published``: ``latest`` names ``iter_N`` (the save is complete).
"""

from __future__ import annotations

import os
import signal
import sys

from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

ENV = "MEGATRON_LANG_KILL_AT"
POINTS = ("save-written", "save-renamed", "save-published")


def parse(spec: str) -> tuple[str, int, int]:
    """``"save-written@4:1"`` -> ``("save-written", 4, 1)``.

    Raises:
        ValueError: an unknown point or a malformed spec (named).
    """
    try:
        point, rest = spec.split("@", 1)
        step, _, rank = rest.partition(":")
        parsed = (point, int(step), int(rank or 0))
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: expected <point>@<step>[:<rank>]") from None
    if point not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {point!r}; one of {', '.join(POINTS)}")
    return parsed


def maybe_kill(point: str, step: int, rank: int) -> None:
    """SIGKILL this process if ``MEGATRON_LANG_KILL_AT`` names this point, step and rank."""
    spec = os.environ.get(ENV)
    if not spec or parse(spec) != (point, step, rank):
        return
    log.warning(
        "fault injection (%s=%s): rank %d killed at %s of step %d", ENV, spec, rank, point, step
    )
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
