"""One TP=1/PP=1/DP=1 reference run shared by the engine tests (one process spawn)."""

from __future__ import annotations

import pytest

from tests._distributed import run_distributed
from tests.platform import _engine_jobs


@pytest.fixture(scope="session")
def engine_reference() -> dict:
    """Weights, logits, one SGD step and three distributed-optimizer steps at world size 1."""
    return run_distributed(_engine_jobs.reference, 1)[0]
