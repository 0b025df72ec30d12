"""Document-level train / held-out split of a JSONL corpus (every N-th document held out).

A held-out set for evaluation must not share documents with training; splitting by
document (not by sequence) keeps whole pages or articles on one side.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class SplitError(ValueError):
    """Bad input to :func:`split_jsonl` (the message names the file and line)."""


@dataclass
class SplitStats:
    """Documents and characters on each side."""

    train_documents: int = 0
    train_characters: int = 0
    heldout_documents: int = 0
    heldout_characters: int = 0


def split_jsonl(
    source: str | os.PathLike,
    train: str | os.PathLike,
    heldout: str | os.PathLike,
    every: int = 10,
    key: str = "text",
) -> SplitStats:
    """Write every ``every``-th document of ``source`` to ``heldout``, the others to ``train``.

    Both outputs appear complete or not at all (temporary files, renamed at the end);
    blank lines are skipped.

    Raises:
        SplitError: ``every`` < 2, a line that is not a JSON object with a string ``key``
            (file and line number in the message), or no document at all.
    """
    if every < 2:
        raise SplitError(f"every={every}: choose 2 or more")
    src = Path(source)
    if not src.is_file():
        raise SplitError(f"{src} does not exist")
    outs = [Path(train), Path(heldout)]
    tmps = [p.with_name(f".{p.name}.tmp") for p in outs]
    stats = SplitStats()
    n_doc = 0
    try:
        for p in outs:
            p.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(src, encoding="utf-8") as f,
            open(tmps[0], "w", encoding="utf-8") as tr,
            open(tmps[1], "w", encoding="utf-8") as ho,
        ):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SplitError(f"{src}:{n}: not JSON ({e.msg})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get(key), str):
                    raise SplitError(f"{src}:{n}: no string field {key!r}")
                chars = len(rec[key])
                if n_doc % every == every - 1:
                    ho.write(line if line.endswith("\n") else line + "\n")
                    stats.heldout_documents += 1
                    stats.heldout_characters += chars
                else:
                    tr.write(line if line.endswith("\n") else line + "\n")
                    stats.train_documents += 1
                    stats.train_characters += chars
                n_doc += 1
        if stats.heldout_documents == 0:
            raise SplitError(
                f"{src}: {n_doc} document(s), fewer than every={every}: nothing to hold out"
            )
        for tmp, out in zip(tmps, outs):
            os.replace(tmp, out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return stats
