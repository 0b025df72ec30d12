"""Catch host-device synchronisation inside a forward, on a CPU-only machine.

On a GPU a host read of a device tensor (``.item()``, ``.tolist()``, ``bool(t)``,
``int(t)``, ``.cpu()``, ``.numpy()``) waits for every kernel queued before it, and so
does a blocking copy of a host tensor to the device (``.to(device)``, ``.cuda()``,
``copy_``, ``torch.tensor(..., device=...)``). On CPU both are free, so they have to be
found by what they would be on a GPU.

:class:`HostSyncCheck` is a ``TorchFunctionMode`` that tracks which tensors would live
on the device: the ones it is told about (a model's parameters and buffers, a
micro-batch's tensors after ``to_device``), factory results made with an explicit
``device=`` (megatron-core writes ``device=torch.cuda.current_device()``), and every
result of a call that takes one of them. Tensors made without a device (``torch.arange(n)``,
``torch.tensor(list)``) are host tensors: reading them costs nothing. It records

* ``read``: a host read of a device tensor;
* ``copy``: a device copy of a host tensor (a non-blocking copy of a *pinned* tensor
  passes; nothing is pinned on CPU, so on CPU every such copy is recorded).

Use::

    check = HostSyncCheck(model, batch)
    with check:
        model(...)
    assert not check.events, check.report()
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

_READS = {
    f"TensorBase.{m}"
    for m in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")
}
_MOVES = {"TensorBase.to", "TensorBase.cuda"}
_FACTORIES = {
    f"_VariableFunctionsClass.{f}"
    for f in (
        "tensor",
        "as_tensor",
        "arange",
        "zeros",
        "ones",
        "empty",
        "full",
        "randn",
        "rand",
        "randint",
        "linspace",
    )
}
_FROM_HOST_DATA = {"_VariableFunctionsClass.tensor", "_VariableFunctionsClass.as_tensor"}


def _name(func) -> str:
    # by name: megatron_lang's CPU support wraps torch's factories and Tensor.to
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


def _is_host(device) -> bool:
    """Only the literal ``"cpu"`` is the host: on CPU a device taken from a tensor or from
    ``torch.cuda.current_device()`` is ``torch.device("cpu")`` and stands for the GPU."""
    return isinstance(device, str) and device == "cpu"


def _target_device(args, kwargs):
    """The device argument of a ``Tensor.to`` call (None: a dtype-only conversion)."""
    if kwargs.get("device") is not None:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (torch.device, str, int)) and not isinstance(a, bool):
            return a
    return None


class HostSyncCheck(TorchFunctionMode):
    """Records host reads of device tensors and blocking host->device copies (see module)."""

    def __init__(self, *device_objects):
        super().__init__()
        self._device = WeakIdKeyDictionary()
        self.events: list[tuple[str, str, str]] = []
        for obj in device_objects:
            self.mark_device(obj)

    def mark_device(self, obj) -> None:
        """Treat the tensors of ``obj`` (module, dict, list, dataclass, tensor) as device ones."""
        if isinstance(obj, torch.nn.Module):  # parameters, buffers, plain tensor attributes
            tensors = [*obj.parameters(), *obj.buffers()]
            tensors += [v for m in obj.modules() for v in vars(m).values()]
        elif hasattr(obj, "__dataclass_fields__"):
            tensors = tree_flatten(list(vars(obj).values()))[0]
        else:
            tensors = tree_flatten(obj)[0]
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._device[t] = True

    def on_device(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t in self._device

    def _record(self, kind: str, name: str) -> None:
        here = (__file__, "/torch/", "cpu_support.py")
        frames = [f for f in traceback.extract_stack() if not any(h in f.filename for h in here)]
        where = f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else "?"
        self.events.append((kind, name, where))

    def report(self) -> str:
        return "\n".join(f"{kind}: {name} at {where}" for kind, name, where in self.events)

    def _goes_to_device(self, target) -> bool:
        if isinstance(target, torch.Tensor):
            return self.on_device(target)
        return target is not None and not _is_host(target)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        from_device = any(self.on_device(t) for t in inputs)
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        to_device = False
        if name in _READS and self.on_device(src):
            self._record("read", name)
        elif name in _MOVES and src is not None:
            target = "cuda" if name.endswith("cuda") else _target_device(args, kwargs)
            to_device = self._goes_to_device(target)
            pinned_async = kwargs.get("non_blocking") and src.is_pinned()
            if to_device and not self.on_device(src) and not pinned_async:
                self._record("copy", name)
        elif name == "TensorBase.copy_" and self.on_device(src) and len(args) > 1:
            if not self.on_device(args[1]) and not (
                kwargs.get("non_blocking") and args[1].is_pinned()
            ):
                self._record("copy", name)
        elif name in _FACTORIES:
            to_device = self._goes_to_device(kwargs.get("device"))
            if to_device and name in _FROM_HOST_DATA and not from_device:
                self._record("copy", name)  # host data (Python values) copied to the device
        out = func(*args, **kwargs)
        if from_device and name not in _READS or to_device:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._device[t] = True
        return out
