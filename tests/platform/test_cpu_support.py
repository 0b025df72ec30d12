"""The CPU redirection of megatron-core's CUDA calls (megatron_lang.platform.cpu_support)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from megatron_lang.platform import cpu_support

pytestmark = pytest.mark.unit

needs_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@needs_cpu
def test_cuda_calls_are_redirected_to_cpu():
    out = _run(
        """
        import torch
        from megatron_lang.platform import cpu_support
        assert cpu_support.enable() and cpu_support.is_enabled()
        devs = [
            torch.zeros(2, device="cuda").device,
            torch.tensor([1.0], device="cuda:0").device,
            torch.empty(3, device=torch.cuda.current_device()).device,
            torch.ones(1).cuda().device,
            torch.ones(1).to("cuda").device,
            torch.nn.Linear(2, 2).cuda().weight.device,
        ]
        assert all(d.type == "cpu" for d in devs), devs
        # clip_grads' type assertion holds for a CPU float gradient
        p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
        assert p.grad.type() == "torch.cuda.FloatTensor"
        assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
        # explicit conversions are untouched
        assert torch.ones(1).type(torch.float64).dtype == torch.float64
        print("ok")
        """
    )
    assert out == "ok"


@needs_cpu
def test_megatron_rng_tracker_forks_on_the_cpu_generator():
    out = _run(
        """
        import torch
        from megatron_lang.platform import cpu_support
        cpu_support.enable()
        from megatron.core.tensor_parallel import random as r
        tracker = r.get_cuda_rng_tracker()
        torch.manual_seed(0)
        tracker.add("model-parallel-rng", 42)
        before = torch.get_rng_state()
        with tracker.fork():
            a = torch.rand(4)
        # the default generator is restored after the fork ...
        assert torch.equal(before, torch.get_rng_state())
        # ... and the forked stream is the one seeded with 42, and it advances
        g = torch.Generator().manual_seed(42)
        assert torch.equal(a, torch.rand(4, generator=g))
        with tracker.fork():
            b = torch.rand(4)
        assert torch.equal(b, torch.rand(4, generator=g))
        print("ok")
        """
    )
    assert out == "ok"


def test_nothing_is_patched_when_cuda_is_present():
    out = _run(
        """
        import torch
        torch.cuda.is_available = lambda: True
        from megatron_lang.platform import cpu_support
        orig_zeros, orig_cuda = torch.zeros, torch.Tensor.cuda
        assert cpu_support.enable() is False and not cpu_support.is_enabled()
        assert torch.zeros is orig_zeros and torch.Tensor.cuda is orig_cuda
        print("ok")
        """
    )
    assert out == "ok"


def test_enable_is_idempotent_and_off_by_default():
    out = _run(
        """
        import torch
        from megatron_lang.platform import cpu_support
        assert not cpu_support.is_enabled()
        first = cpu_support.enable(); zeros = torch.zeros
        assert cpu_support.enable() == first and torch.zeros is zeros
        print("ok")
        """
    )
    assert out == "ok"


def test_importing_the_package_needs_neither_cuda_nor_transformer_engine():
    out = _run(
        """
        import sys
        import megatron_lang, megatron_lang.platform, megatron_lang.models.gpt
        print("transformer_engine" in sys.modules, megatron_lang.platform.cpu_support.is_enabled())
        """
    )
    assert out == "False False"


def test_is_cuda_device():
    assert cpu_support._is_cuda_device("cuda")
    assert cpu_support._is_cuda_device(torch.device("cuda", 1))
    assert cpu_support._is_cuda_device(0)
    assert not cpu_support._is_cuda_device("cpu")
    assert not cpu_support._is_cuda_device(None)
    assert not cpu_support._is_cuda_device(True)


@needs_cpu
def test_torch_device_context_still_redirects_the_real_factories():
    """transformers builds models under ``with torch.device("meta")``; that must keep working."""
    out = _run(
        """
        import torch
        from megatron_lang.platform import cpu_support
        cpu_support.enable()
        with torch.device("meta"):
            t = torch.tensor([1.0])
            z = torch.zeros(2)
        print(t.device, z.device)
        """
    )
    assert out == "meta meta"
