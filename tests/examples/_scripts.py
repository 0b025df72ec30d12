"""Run a launch script of examples/ in a clean environment (no inherited rank/SLURM layout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INHERITED = ("WORLD_SIZE", "SLURM_NTASKS", "RANK", "SLURM_NNODES", "CONFIG", "GPUS_PER_NODE")


def run_script(script: str | Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``bash script args`` from the repository root with this Python and ``env`` on top."""
    full = {k: v for k, v in os.environ.items() if k not in INHERITED}
    full.update({"PYTHON": sys.executable, **env})
    return subprocess.run(
        ["bash", str(REPO / script), *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
