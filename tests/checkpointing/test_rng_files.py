"""RNG files of a checkpoint: plain tensors and values, read without unpickling objects."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from megatron_lang.checkpointing.checkpoint import CheckpointFileError, read_rng_file
from megatron_lang.platform.seed import get_rng_states, set_rng_states

pytestmark = pytest.mark.unit


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    _draws()
    path = tmp_path / "rank0.pt"
    torch.save(get_rng_states(), path)
    expected = _draws()
    _draws()  # move every generator on
    set_rng_states(read_rng_file(path))
    assert _draws() == expected


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: code from the file runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_a_crafted_rng_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "rank0.pt"
    torch.save({"python": _RunsCode(marker), "torch": torch.get_rng_state()}, path)
    with pytest.raises(CheckpointFileError, match=r"rank0\.pt: not a plain tensor file"):
        read_rng_file(path)
    assert not marker.exists()
    # what the old reader did (weights_only=False) runs the file's code
    torch.load(path, weights_only=False)
    assert marker.exists()
