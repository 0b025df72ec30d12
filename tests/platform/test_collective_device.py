"""Every collective's tensor on the device its process group can use (NCCL: the GPU)."""

from __future__ import annotations

import pytest
import torch

from megatron_lang.platform.distributed import collective_device, gpu_for_local_rank
from tests._distributed import run_distributed


def _collectives_with_and_without_device() -> dict:
    import torch.distributed as dist

    from megatron_lang.platform import collective_tensor
    from tests._collective_check import CollectiveDeviceError, install

    install()
    ok = collective_tensor([1.0])
    dist.all_reduce(ok)
    caught = []
    for make in (lambda: torch.tensor([1.0]), lambda: torch.zeros(3)):
        try:
            dist.all_reduce(make())
        except CollectiveDeviceError as e:
            caught.append(str(e))
    gathered = [torch.zeros(1, device=collective_device()) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, ok)
    return {"ok": float(ok), "caught": caught, "gathered": [float(g) for g in gathered]}


@pytest.mark.distributed
def test_the_check_refuses_device_less_tensors_and_passes_collective_device_ones():
    out = run_distributed(_collectives_with_and_without_device, 2)[0]
    assert out["ok"] == 2.0 and out["gathered"] == [2.0, 2.0]
    assert len(out["caught"]) == 2, out["caught"]
    assert "torch.distributed.all_reduce at " in out["caught"][0]
    assert "test_collective_device.py" in out["caught"][0]  # names the caller


@pytest.mark.unit
def test_collective_device_is_the_cpu_without_cuda():
    if torch.cuda.is_available():
        assert collective_device().type == "cuda"
    else:
        assert collective_device() == torch.device("cpu")


@pytest.mark.unit
@pytest.mark.parametrize(
    "local_rank,count,gpu", [(0, 8, 0), (7, 8, 7), (5, 1, 0), (3, 2, 1), (9, 4, 1)]
)
def test_a_rank_takes_gpu_local_rank_modulo_the_visible_count(local_rank, count, gpu):
    assert gpu_for_local_rank(local_rank, count) == gpu


@pytest.mark.unit
def test_no_visible_gpu_is_named():
    with pytest.raises(RuntimeError, match="local rank 2: CUDA is available but no GPU"):
        gpu_for_local_rank(2, 0)
