"""CPU support for megatron-core: redirect its hard CUDA calls when CUDA is absent.

megatron-core is written for GPUs.  Its model, optimizer, pipeline schedules and
``dist_checkpointing`` work unchanged on CPU with the gloo backend once a small
set of CUDA-only calls are pointed at the CPU:

* ``torch.cuda.current_device()`` (used as ``device=`` everywhere) returns the
  CPU device;
* tensors created with a literal ``device="cuda"`` (``FP32Optimizer``,
  ``clip_grads``, the pipeline schedules) are created on the CPU;
* ``Tensor.cuda()`` / ``Module.cuda()`` return CPU objects;
* the CUDA RNG state used by megatron-core's model-parallel RNG tracker is the
  CPU generator's state;
* ``clip_grads`` asserts ``param.grad.type() == 'torch.cuda.FloatTensor'``;
  CPU float gradients pass that check;
* stream, event and synchronisation calls become no-ops.

All of this lives in this one module and is applied by :func:`enable` only when
``torch.cuda.is_available()`` is False.  On a GPU machine nothing is changed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import torch

_ENABLED = False
_CPU = torch.device("cpu")

# Factory functions that accept a ``device=`` keyword.
_FACTORIES = (
    "tensor",
    "as_tensor",
    "empty",
    "empty_like",
    "empty_strided",
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "full",
    "full_like",
    "arange",
    "rand",
    "rand_like",
    "randn",
    "randn_like",
    "randint",
    "randperm",
    "linspace",
    "eye",
    "tril_indices",
    "triu_indices",
)


def cuda_is_available() -> bool:
    """True when a usable CUDA device is present."""
    return torch.cuda.is_available()


def is_enabled() -> bool:
    """True when the CPU redirection is active in this process."""
    return _ENABLED


def _is_cuda_device(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int means "CUDA device N" to torch.
    return isinstance(device, int) and not isinstance(device, bool)


def _redirect_device(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = _CPU
        return fn(*args, **kwargs)

    wrapper.__megatron_lang_cpu__ = True
    return wrapper


def _redirect_to(original):
    @functools.wraps(original)
    def to(self, *args, **kwargs):
        if args and _is_cuda_device(args[0]):
            args = (_CPU,) + args[1:]
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = _CPU
        return original(self, *args, **kwargs)

    return to


def _tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self.to(_CPU, non_blocking=non_blocking, memory_format=memory_format)


def _module_cuda(self, device=None):
    return self.to(_CPU)


class _NullStream:
    """Stand-in for ``torch.cuda.Stream``/``Event`` on CPU: everything is synchronous."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, *args, **kwargs):
        return _NullStream()

    def record(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _patch_torch() -> None:
    # torch caches, on first use, the factory functions that `with torch.device(...)`
    # redirects. Fill that cache with the real functions before wrapping them, or
    # the context stops applying to them (transformers' from_pretrained then leaves
    # non-persistent buffers such as RoPE inv_freq uninitialised).
    import torch.utils._device

    torch.utils._device._device_constructors()
    for name in _FACTORIES:
        fn = getattr(torch, name, None)
        if fn is not None and not getattr(fn, "__megatron_lang_cpu__", False):
            setattr(torch, name, _redirect_device(fn))
    torch.Tensor.to = _redirect_to(torch.Tensor.to)
    torch.Tensor.cuda = _tensor_cuda
    torch.nn.Module.cuda = _module_cuda

    cuda = torch.cuda
    cuda.current_device = lambda: _CPU
    cuda.set_device = lambda device: None
    cuda.device_count = lambda: 0
    cuda.synchronize = lambda device=None: None
    cuda.empty_cache = lambda: None
    cuda.Stream = _NullStream
    cuda.Event = _NullStream
    cuda.current_stream = lambda device=None: _NullStream()
    cuda.default_stream = lambda device=None: _NullStream()
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.memory_allocated = lambda device=None: 0
    cuda.max_memory_allocated = lambda device=None: 0
    cuda.memory_reserved = lambda device=None: 0
    cuda.max_memory_reserved = lambda device=None: 0
    cuda.reset_peak_memory_stats = lambda device=None: None

    # The CUDA generator is the CPU generator.
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state


def _patch_megatron() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    def get_state(device="cuda", clone=False, graph_safe=False):
        return torch.get_rng_state()

    def set_state(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    mcore_random._get_cuda_rng_state = get_state
    mcore_random._set_cuda_rng_state = set_state
    # The tracker warns when the CPU generator moves inside a CUDA-RNG fork; on
    # CPU the two generators are one, so that is expected, not a bug.
    logging.getLogger(mcore_random.__name__).addFilter(
        lambda record: "CPU RNG state changed within GPU RNG context" not in record.getMessage()
    )

    # clip_grads asserts the CUDA tensor type of each gradient; on CPU the
    # equivalent type is torch.FloatTensor.  The check is kept, with the CPU name.
    _orig_type = torch.Tensor.type

    @functools.wraps(_orig_type)
    def tensor_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = _orig_type(self)
            if name.startswith("torch.") and self.device.type == "cpu":
                return name.replace("torch.", "torch.cuda.", 1)
            return name
        return _orig_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = tensor_type


def enable() -> bool:
    """Apply the CPU redirection if CUDA is absent.  Idempotent.

    Returns:
        True when the redirection is active after the call.
    """
    global _ENABLED
    if _ENABLED:
        return True
    if cuda_is_available():
        return False
    _patch_torch()
    _patch_megatron()
    _ENABLED = True
    return True


def transformer_config_defaults() -> dict:
    """TransformerConfig values the gloo backend needs (empty when CUDA is present).

    ``batch_p2p_comm=False``: megatron-core's batched pipeline send/recv posts, for
    every rank, ``send_prev, recv_prev, send_next, recv_next``. gloo matches
    messages between two ranks by posting order, and with PP=2 the previous and
    the next stage are the same rank, so an activation can land in the buffer of
    a gradient of the same shape (seen with the interleaved schedule: wrong
    outputs from the third micro-batch on). The unbatched path orders sends and
    receives by even/odd rank, which gloo matches correctly.
    """
    if cuda_is_available():
        return {}
    return {"batch_p2p_comm": False}
