"""Outputs that appear complete or not at all.

:func:`atomic_output_dir` is the one way the tools write an output folder (converted
checkpoints, merged LoRA exports, remapped checkpoints, tokenizers): everything goes
into a hidden temporary sibling, renamed into place only when the block succeeded, so
a failed or interrupted run leaves nothing that looks like a finished output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    allow_empty: bool = False,
    error: type[Exception] = FileExistsError,
) -> Iterator[Path]:
    """A temporary folder next to ``output_dir``, renamed to it when the block succeeds.

    Args:
        output_dir: the final folder.
        overwrite: replace an existing ``output_dir`` (only once the new one is complete).
        allow_empty: an existing empty folder is not an error.
        error: the exception raised for an existing output (the caller's error type).

    Raises:
        error: ``output_dir`` exists (and is not empty, with ``allow_empty``) and
            ``overwrite`` is false; nothing is written then.
    """
    out = Path(output_dir)
    empty = out.is_dir() and not any(out.iterdir())
    if out.exists() and not overwrite and not (allow_empty and empty):
        what = "already exists" + ("" if empty or not out.is_dir() else " and is not empty")
        raise error(f"output {out} {what} (remove it, or pass --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.incomplete-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
