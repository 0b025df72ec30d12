"""No process the suite starts may outlive it (a pytest plugin, loaded by ``conftest.py``).

Tests start training runs (torchrun, spawned ranks) that start processes of their own:
megatron-core's asynchronous checkpoint writer starts a ``multiprocessing`` Manager, and
a rank killed inside a save (the SIGKILL / crash tests) leaves it behind, reparented to
init where nobody sees it (a fresh-clone run once ended with two such Managers of
~287 MB each still alive; before ``tests/_distributed.py`` ran the exit handlers there
were 125 of them).

At the start of the session this process becomes the *child subreaper* of everything
below it (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): an orphaned descendant is
reparented here instead of to init, so it stays visible.

After each test (its fixtures torn down) every process it started that still runs is
killed and reaped: processes below this one created while the test ran, except this
process's own ``multiprocessing`` children (an in-process checkpoint save's Manager:
``multiprocessing`` shuts those down at exit). torchrun starts every rank in a
session of its own, so killing a launcher's process group misses them and whatever
they started; this does not. The terminal summary lists what was reaped. At the end of
the session this process's own ``multiprocessing`` children are shut down; anything
still alive then gets a few seconds, is killed, and fails the session, named (command
line, memory, the test after which it was first seen).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0
"""How long survivors get to exit on their own at the end of the session."""

_first_seen: dict[int, tuple[float, str]] = {}  # pid -> (create_time, test nodeid)
_reaped: list[str] = []  # what the per-test reaping killed, described


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


_OWN_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""This process's own multiprocessing helpers: they exit with it (their pipe closes)."""


def live_descendants() -> list[psutil.Process]:
    """Every process below this one that is still running (zombies and this process's own
    multiprocessing helpers excluded)."""
    me, out = os.getpid(), []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.ppid() == me and any(h in " ".join(p.cmdline()) for h in _OWN_HELPERS):
                continue
            out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _reap_zombies() -> None:
    """Wait for exited orphans reparented here (else they stay zombies)."""
    for p in psutil.Process().children():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass


def _describe(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())[:200] or p.name()
        rss = p.memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return f"pid {p.pid} (gone)"
    seen = _first_seen.get(p.pid)
    where = f", first seen after {seen[1]}" if seen else ""
    return f"pid {p.pid}: {cmd} ({rss:.0f} MB{where})"


def pytest_sessionstart(session):
    session.config._leftovers_subreaper = _become_subreaper()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield
    item._leftovers_before = _snapshot()  # after the fixtures: theirs are not the test's


def _snapshot() -> set[tuple[int, float]]:
    out = set()
    for p in live_descendants():
        try:
            out.add((p.pid, p.create_time()))
        except psutil.NoSuchProcess:
            pass
    return out


def _own_mp_children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    before = getattr(item, "_leftovers_before", None)
    own = _own_mp_children()
    stray = []
    for p in live_descendants():
        try:
            created = p.create_time()
        except psutil.NoSuchProcess:
            continue
        seen = _first_seen.get(p.pid)
        if seen is None or seen[0] != created:  # a pid can be reused
            _first_seen[p.pid] = (created, item.nodeid)
        if before is not None and (p.pid, created) not in before and p.pid not in own:
            stray.append(p)
    if stray:
        _reaped.extend(f"{_describe(p)} [after {item.nodeid}]" for p in stray)
        for p in stray:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(stray, timeout=5)
        _reap_zombies()


def pytest_terminal_summary(terminalreporter):
    if _reaped:
        terminalreporter.write_sep("-", f"{len(_reaped)} leftover process(es) reaped after tests")
        for line in _reaped:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    for child in multiprocessing.active_children():  # ours: shut down as at exit
        child.terminate()
        child.join(5)
    end = time.time() + GRACE_S
    survivors = live_descendants()
    while survivors and time.time() < end:
        time.sleep(0.2)
        _reap_zombies()
        survivors = live_descendants()
    if not survivors:
        _reap_zombies()
        return
    lines = [_describe(p) for p in survivors]
    for p in survivors:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(survivors, timeout=5)
    _reap_zombies()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (
        f"{len(lines)} process(es) started by the suite outlived it (killed now):\n  "
        + "\n  ".join(lines)
    )
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(message)
    else:
        print(message)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
