"""Run a function on N real processes joined by a gloo process group.

``run_distributed(fn, world_size, *args)`` spawns ``world_size`` processes,
each sets the torchrun rank variables, calls
``megatron_lang.platform.init_distributed()`` and then ``fn(*args)``.  It returns
the list of per-rank return values (anything ``torch.save`` can store) and raises
with each failing rank's traceback.  ``fn`` must be a module-level function.

The ranks meet through a ``file://`` store in the run's temporary folder, not a TCP
port: a port found free by one test can be taken by another before rank 0 binds it.
``torch.distributed`` is initialised here with that store; ``init_distributed()`` then
enables the CPU support for megatron-core (it does so before its "already
initialised" check) and leaves the process group as it is.
"""

from __future__ import annotations

import atexit
import datetime
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    """A TCP port that was free a moment ago, for launches that need ``MASTER_PORT``.

    Racy (another process can take it before it is bound again); ``run_distributed``
    does not use it.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIMEOUT_S = 240


def _init_process_group(rank: int, world_size: int, store_file: Path) -> None:
    """Join the ranks of this run through ``store_file`` (gloo; NCCL with CUDA)."""
    import torch.distributed as dist

    from megatron_lang.platform import backend_for_device

    # the GPU is selected by init_distributed() afterwards, before any collective
    dist.init_process_group(
        backend=backend_for_device(),
        init_method=store_file.as_uri(),
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )


def _worker(fn, rank: int, world_size: int, out_dir: str, args: tuple) -> None:
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # nothing here listens on a port
        os.environ.pop(key, None)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1"
    )
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        from megatron_lang.platform import destroy_distributed, init_distributed

        _init_process_group(rank, world_size, out / "store")
        init_distributed(timeout_s=TIMEOUT_S)  # CPU support; the group is already up
        try:
            result = fn(*args)
        finally:
            destroy_distributed()
        torch.save(result, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise SystemExit(1) from None
    # The result is written and the process group destroyed: run the exit handlers
    # (multiprocessing's among them: they shut down helper processes such as the
    # Manager that megatron-core's checkpoint writer starts, which would otherwise
    # outlive the rank), then end without the rest of the interpreter's teardown. There
    # gloo's C++ threads are sometimes destroyed while joinable ("terminate called
    # without an active exception", SIGABRT, seen in about 1 of 10 runs of
    # tests/platform/test_collective_device.py on 2 loaded cores; pytorch/pytorch#190489)
    # -- after everything the test checks has happened.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(fn, world_size: int, *args: Any, timeout: float = 300) -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` gloo ranks; return each rank's result."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mlang-dist-") as d:
        procs = [
            ctx.Process(target=_worker, args=(fn, r, world_size, d, args), daemon=False)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        errors = []
        for r, p in enumerate(procs):
            err = Path(d) / f"rank{r}.err"
            if err.exists():
                errors.append(f"--- rank {r} ---\n{err.read_text()}")
            elif p.exitcode != 0 and r not in hung:
                errors.append(f"--- rank {r} exited with code {p.exitcode} ---")
        if errors or hung:
            msg = "\n".join(errors)
            if hung:
                msg += f"\nranks {hung} did not finish within {timeout} s"
            raise RuntimeError(f"distributed run of {fn.__name__} failed:\n{msg}")
        return [torch.load(Path(d) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
