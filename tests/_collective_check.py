"""Fail on CPU where NCCL would fail on GPUs: collectives on tensors made without a device.

On a CUDA machine the process group is NCCL, which has no CPU backend: a tensor
made with ``torch.tensor([...])`` / ``torch.zeros(n)`` (no ``device=``) lives on
the host and every collective on it fails ("No backend type associated with
device type cpu"). On CPU with gloo the same code works, so no test saw it.

:func:`install` (in a rank process, after ``init_distributed``) records every
tensor the factory functions create *without* a device (host-born on a GPU
machine too) and wraps the tensor collectives of ``torch.distributed``: a
collective whose tensor shares storage with a host-born tensor raises
:class:`CollectiveDeviceError` naming the collective and the caller. Tensors made
with ``device=torch.cuda.current_device()`` or ``device=collective_device()``
(on CUDA: the GPU) pass, as do collectives on megatron-core's gloo groups
(host tensors on purpose). Derived tensors (``x + 1``) are not tracked: the check
catches the pattern that breaks, a device-less factory tensor handed to a
collective, without false alarms.
"""

from __future__ import annotations

import functools
import sys
import weakref

import torch
import torch.distributed as dist

FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "as_tensor")
COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all_single",
    "gather",
    "scatter",
    "send",
    "recv",
    "isend",
    "irecv",
)

_host_born: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_installed = False
checked: list[str] = []
"""Names of the collectives checked so far in this process (for tests of the check)."""


class CollectiveDeviceError(RuntimeError):
    """A collective got a host tensor that NCCL would refuse on a GPU machine."""


def _record(fn):
    @functools.wraps(fn)
    def factory(*args, **kwargs):
        out = fn(*args, **kwargs)
        if kwargs.get("device") is None and isinstance(out, torch.Tensor) and out.numel():
            _host_born[out.untyped_storage().data_ptr()] = out
        return out

    return factory


def _gloo_groups() -> set:
    from megatron.core import parallel_state as ps

    return {
        v for k, v in vars(ps).items() if k.endswith("_GLOO") and isinstance(v, dist.ProcessGroup)
    }


def _caller() -> str:
    frame = sys._getframe(2)
    while frame and (
        "torch/distributed" in frame.f_code.co_filename or frame.f_code.co_filename == __file__
    ):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for x in obj:
            yield from _tensors(x)


def _checked(name, fn):
    @functools.wraps(fn)
    def collective(*args, **kwargs):
        group = kwargs.get("group")
        if group is None or group not in _gloo_groups():
            for t in _tensors(list(args) + list(kwargs.values())):
                if not t.numel():
                    continue
                born = _host_born.get(t.untyped_storage().data_ptr())
                if (
                    born is not None
                    and born.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                ):
                    raise CollectiveDeviceError(
                        f"torch.distributed.{name} at {_caller()} got a tensor made without a "
                        f"device (shape {tuple(t.shape)}, {t.dtype}): on GPUs it is a host "
                        "tensor and NCCL refuses it; make it with "
                        "device=megatron_lang.platform.collective_device()"
                    )
        checked.append(name)
        return fn(*args, **kwargs)

    return collective


def install() -> None:
    """Record device-less factory tensors and check every collective (idempotent)."""
    global _installed
    if _installed:
        return
    for name in FACTORIES:
        setattr(torch, name, _record(getattr(torch, name)))
    for name in COLLECTIVES:
        setattr(dist, name, _checked(name, getattr(dist, name)))
    _installed = True
