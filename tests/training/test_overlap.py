"""``optimizer.overlap_param_gather`` (every GPU config) saves, exports and carries current weights.

With the overlap, the distributed optimizer all-gathers the updated weights in the
next forward's pre-hooks, not after the step: until then each DP rank holds its own
shard current and the others one step old. Whatever reads the weights in between
(a save, an export, a stage change, an evaluation) must force the gather first.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests._distributed import run_distributed
from tests.training import _jobs
from tests.training.test_stages import EMB_THEN_FULL, _checkpoint_tensors

pytestmark = pytest.mark.distributed


def test_overlap_param_gather_at_dp2_saves_and_exports_the_weights_of_the_plain_run(
    tiny_blend, start_checkpoint, tmp_path
):
    from tools.convert_hf import megatron_to_hf

    runs = {}
    for name, overlap in (("plain", False), ("overlap", True)):
        ckpt = tmp_path / name
        args = _jobs.base_overrides(
            tiny_blend,
            **{
                "model.checkpoint": start_checkpoint,
                "model.dtype": "bf16",
                "train.steps": 5,
                "train.eval_interval": 0,  # the final evaluation syncs: saves at 3 and 4 do not
                "stages": EMB_THEN_FULL,  # a stage change at step 3 carries the weights over
                "checkpoint.dir": ckpt,
                "checkpoint.save_interval": 4,
                "optimizer.overlap_param_gather": overlap,
                "optimizer.overlap_grad_reduce": overlap,
            },
        )
        history = run_distributed(_jobs.train, 2, args)[0]
        out = tmp_path / f"{name}-hf"
        assert megatron_to_hf.main(["--ckpt", str(ckpt / "iter_0000005"), "--out", str(out)]) == 0
        runs[name] = {
            "loss": [h["loss"] for h in history if "loss" in h],
            "valid": [v for h in history for k, v in h.items() if k.startswith("valid/")],
            "ckpt3": _checkpoint_tensors(ckpt / "iter_0000003"),  # end of stage 0
            "ckpt4": _checkpoint_tensors(ckpt / "iter_0000004"),
            "ckpt5": _checkpoint_tensors(ckpt / "iter_0000005"),
            "hf": load_file(out / "model.safetensors"),
        }
    plain, overlap = runs["plain"], runs["overlap"]
    assert plain["loss"] == overlap["loss"]
    assert plain["valid"] and plain["valid"] == overlap["valid"]  # the final evaluation
    for key in ("ckpt3", "ckpt4", "ckpt5", "hf"):
        assert set(plain[key]) == set(overlap[key])
        diff = [k for k in plain[key] if not torch.equal(plain[key][k], overlap[key][k])]
        assert not diff, f"{key}: {diff[:5]}"
