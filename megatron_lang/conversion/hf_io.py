"""Reading HF checkpoints tensor by tensor, and writing sharded safetensors streamed.

Sources: a directory of ``*.safetensors`` (read with ``safe_open``, one tensor at
a time from the memory-mapped file), of ``pytorch_model*.bin`` (``torch.load``
with ``mmap=True``), or a GGUF file (de-quantised by ``transformers``; the whole
model is then in memory, GGUF models being small).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from megatron_lang.conversion.mapping import ConversionError
from megatron_lang.platform import get_logger

log = get_logger(__name__)


class HFSource:
    """Named tensors of an HF checkpoint, read on demand."""

    config: Any
    """The HF ``PretrainedConfig``."""
    tokenizer_dir: Path | None
    """Folder with the tokenizer files, if any."""
    generation_config: dict[str, Any] | None = None

    def keys(self) -> set[str]:
        """Names of all tensors."""
        raise NotImplementedError

    def get(self, name: str) -> torch.Tensor:
        """One tensor (a fresh copy the caller owns)."""
        raise NotImplementedError

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """Read a tensor into ``out`` (same shape; contiguous), converting the dtype if needed."""
        out.copy_(self.get(name))

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of a tensor, without reading its data."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files / temporary folders."""


def _read_generation_config(d: Path) -> dict[str, Any] | None:
    p = d / "generation_config.json"
    return json.loads(p.read_text()) if p.is_file() else None


class SafetensorsSource(HFSource):
    """A directory with ``config.json`` and ``*.safetensors`` files.

    Tensors are read with plain positioned reads into freshly allocated
    tensors (the safetensors layout is a JSON header followed by raw bytes), not
    through a memory map: mapped pages would stay resident and count towards
    the converter's memory until the file is closed.
    """

    def __init__(self, path: Path, config: Any):
        self.config = config
        self.tokenizer_dir = path
        self.generation_config = _read_generation_config(path)
        self._files: list[Path] = sorted(path.glob("*.safetensors"))
        self._where: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for f in self._files:
            with open(f, "rb") as fh:
                (hlen,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(hlen))
            header.pop("__metadata__", None)
            for k, info in header.items():
                self._where[k] = (f, 8 + hlen, info)

    def keys(self) -> set[str]:
        return set(self._where)

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        _, _, info = self._where[name]
        if info["dtype"] not in _FROM_ST_DTYPES:
            raise ConversionError(f"tensor {name!r}: unsupported safetensors dtype {info['dtype']}")
        return tuple(info["shape"]), _FROM_ST_DTYPES[info["dtype"]]

    def get(self, name: str) -> torch.Tensor:
        shape, dtype = self.meta(name)
        out = torch.empty(shape, dtype=dtype)
        self.read_into(name, out)
        return out

    def read_into(self, name: str, out: torch.Tensor) -> None:
        path, base, info = self._where[name]
        shape, dtype = self.meta(name)
        if out.dtype != dtype or not out.is_contiguous():
            out.copy_(self.get(name))
            return
        begin, end = info["data_offsets"]
        buf = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        if buf.nbytes != end - begin:
            raise ConversionError(
                f"tensor {name!r}: {end - begin} bytes in {path.name}, expected {buf.nbytes} "
                f"for shape {shape} {dtype}"
            )
        with open(path, "rb") as fh:
            fh.seek(base + begin)
            if fh.readinto(buf) != buf.nbytes:
                raise ConversionError(f"tensor {name!r}: {path.name} is truncated")


class BinSource(HFSource):
    """A directory with ``pytorch_model*.bin`` files (memory-mapped ``torch.load``)."""

    def __init__(self, path: Path, config: Any):
        self.config = config
        self.tokenizer_dir = path
        self.generation_config = _read_generation_config(path)
        self._where: dict[str, dict[str, torch.Tensor]] = {}
        for f in sorted(path.glob("pytorch_model*.bin")):
            sd = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
            for k in sd:
                self._where[k] = sd

    def keys(self) -> set[str]:
        return set(self._where)

    def get(self, name: str) -> torch.Tensor:
        return self._where[name][name].clone()

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        t = self._where[name][name]
        return tuple(t.shape), t.dtype


class InMemorySource(HFSource):
    """Tensors already in memory (a GGUF model de-quantised by transformers, tests)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], config: Any, tokenizer_dir=None):
        self.config = config
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else None
        self._sd = state_dict
        self._tmp = None

    def keys(self) -> set[str]:
        return set(self._sd)

    def get(self, name: str) -> torch.Tensor:
        return self._sd.pop(name)  # each tensor is converted once; free it as we go

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        return tuple(self._sd[name].shape), self._sd[name].dtype

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _gguf_source(path: Path) -> InMemorySource:
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantising %s through transformers", path)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    tmp = tempfile.TemporaryDirectory(prefix="mlang-gguf-tok-")
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp.name)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    src = InMemorySource(sd, model.config, tmp.name)
    src._tmp = tmp
    del model
    return src


def gguf_to_hf_dir(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """De-quantise a ``.gguf`` model into an fp32 safetensors HF directory (config, tokenizer).

    transformers 5.x refuses ``save_pretrained`` on a GGUF-loaded model (it counts as
    quantized), so the tensors, the config (without its quantization fields) and the
    tokenizer are written directly. The directory appears complete or not at all.

    Raises:
        ConversionError: ``gguf`` is not a ``.gguf`` file; ``out_dir`` exists.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    src, out = Path(gguf), Path(out_dir)
    if not (src.is_file() and src.suffix == ".gguf"):
        raise ConversionError(f"{src} is not a .gguf file")
    if out.exists():
        raise ConversionError(f"{out} exists; remove it or choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        source = _gguf_source(src)
        sd = {k: v.contiguous() for k, v in source._sd.items()}
        save_file(sd, tmp / "model.safetensors", metadata={"format": "pt"})
        cfg = source.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(cfg, attr):
                delattr(cfg, attr)
        cfg.architectures = [cfg.architectures[0] if cfg.architectures else "LlamaForCausalLM"]
        cfg.save_pretrained(tmp)
        for f in Path(source.tokenizer_dir).iterdir():
            shutil.copy2(f, tmp / f.name)
        source.close()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def open_hf(path: str | os.PathLike) -> HFSource:
    """Open an HF directory (safetensors or .bin) or a ``.gguf`` file for reading.

    Raises:
        ConversionError: no config / no weights found.
    """
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return _gguf_source(p)
    if not p.is_dir():
        raise ConversionError(f"{p} is neither an HF model directory nor a .gguf file")
    if not (p / "config.json").is_file():
        raise ConversionError(f"{p} has no config.json")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(p)
    except (ValueError, KeyError) as e:
        arch = json.loads((p / "config.json").read_text()).get("architectures")
        raise ConversionError(f"unsupported architecture {arch}: {e}") from e
    if any(p.glob("*.safetensors")):
        return SafetensorsSource(p, config)
    if any(p.glob("pytorch_model*.bin")):
        return BinSource(p, config)
    raise ConversionError(f"{p} has no *.safetensors or pytorch_model*.bin weights")


_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
}
_FROM_ST_DTYPES = {v: k for k, v in _ST_DTYPES.items()}


class StreamingSafetensorsWriter:
    """Writes a planned set of tensors into sharded safetensors files, one tensor at a time.

    The shapes and dtypes are known up front (from the architecture), so each
    shard's header is written first and the tensors' bytes are appended as they
    arrive; at most one tensor is held by the writer.  Tensors must be given in
    the planned order.
    """

    def __init__(
        self,
        out_dir: Path,
        plan: list[tuple[str, tuple[int, ...], torch.dtype]],
        max_shard_bytes: int = 2 * 1024**3,
    ):
        self.out_dir = out_dir
        shards: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = [[]]
        size = 0
        for name, shape, dtype in plan:
            nbytes = _numel(shape) * dtype.itemsize
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, shape, dtype))
            size += nbytes
        n = len(shards)
        self._files = [
            "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            for i in range(n)
        ]
        self._order = [
            (i, name, shape, dtype) for i, s in enumerate(shards) for name, shape, dtype in s
        ]
        self._shards = shards
        self._pos = 0
        self._fh = None
        self._cur = -1
        self.bytes_written = 0
        self.total_size = sum(_numel(s) * d.itemsize for _, s, d in plan)

    def _finish_file(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def _open(self, i: int) -> None:
        self._finish_file()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape, dtype in self._shards[i]:
            nbytes = _numel(shape) * dtype.itemsize
            header[name] = {
                "dtype": _ST_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [off, off + nbytes],
            }
            off += nbytes
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        self._fh = open(self.out_dir / self._files[i], "wb")
        self._fh.write(struct.pack("<Q", len(hb)) + hb)
        self.bytes_written += 8 + len(hb)
        self._cur = i

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next planned tensor."""
        i, pname, shape, dtype = self._order[self._pos]
        if name != pname or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ConversionError(
                f"tensor {name!r}: expected {pname!r} with shape {shape} {dtype}, "
                f"found shape {tuple(tensor.shape)} {tensor.dtype}"
            )
        if i != self._cur:
            self._open(i)
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._fh.write(memoryview(data))
        self.bytes_written += data.nbytes
        self._pos += 1

    def close(self) -> None:
        """Finish the last file and write ``model.safetensors.index.json`` when sharded."""
        if self._pos != len(self._order):
            missing = self._order[self._pos][1]
            raise ConversionError(f"tensor {missing!r} was never written")
        self._finish_file()
        if len(self._files) > 1:
            weight_map = {name: self._files[i] for i, name, _, _ in self._order}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    def abort(self) -> None:
        """Close the open file without completing it."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
