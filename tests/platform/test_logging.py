"""The rank-aware logger: rank 0 logs INFO, other ranks only warnings and errors."""

from __future__ import annotations

import logging

import pytest

from megatron_lang.platform import get_logger, setup_logging
from megatron_lang.platform import logging as mlog

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("rank,expected", [(0, ["info", "warn"]), (3, ["warn"])])
def test_rank_filter(monkeypatch, capsys, rank, expected):
    monkeypatch.setattr(mlog, "current_rank", lambda: rank)
    setup_logging("INFO")
    log = get_logger("tests.logging")
    log.info("info")
    log.warning("warn")
    err = capsys.readouterr().err
    got = [m for m in ("info", "warn") if f"] {m}" in err]
    assert got == expected
    if "warn" in got:
        assert f"rank{rank} WARNING" in err


def test_all_ranks_mode(monkeypatch, capsys):
    monkeypatch.setattr(mlog, "current_rank", lambda: 2)
    setup_logging(logging.INFO, all_ranks=True)
    get_logger("megatron_lang.x").info("hello")
    assert "rank2 INFO megatron_lang.x] hello" in capsys.readouterr().err
    setup_logging("INFO")
