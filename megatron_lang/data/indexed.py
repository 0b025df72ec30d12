"""Megatron indexed datasets (``.bin`` + ``.idx``): a streaming writer, reader, validator, merger.

The format is the one of :mod:`megatron.core.datasets.indexed_dataset` (the
"MMIDIDX" index, version 1), written byte for byte the same way:

``.idx``::

    b"MMIDIDX\\x00\\x00"          9 bytes
    version = 1                    <Q
    dtype code                     <B   (uint8=1 int8=2 int16=3 int32=4 int64=5
                                         float64=6 float32=7 uint16=8)
    sequence count S               <Q
    document count D               <Q   (number of documents + 1)
    sequence lengths               S x int32
    sequence pointers              S x int64   (byte offsets into .bin)
    document indices               D x int64   (0, then the sequence index after
                                                each document)

``.bin``: the token ids of all sequences back to back in the dtype.

The writer keeps nothing per sequence in memory: lengths and document
boundaries are spilled to temporary files and the index is assembled in
blocks at :meth:`IndexedDatasetWriter.finalize`.  Both files are written
under temporary names; ``finalize`` removes a stale ``.idx``, renames the
``.bin`` and then the ``.idx``, so an interrupted run never leaves a pair
that looks complete.  This module does not import torch or megatron-core.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
HEADER_BYTES = 9 + 8 + 1 + 8 + 8  # 34

DTYPE_CODES: dict[type, int] = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}

_BLOCK = 1 << 20  # elements per block when assembling or checking the index


def optimal_dtype(vocab_size: int) -> type:
    """``np.uint16`` when ``vocab_size < 65500``, else ``np.int32`` (megatron-core's rule)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def bin_path(prefix: str | Path) -> Path:
    """``{prefix}.bin``."""
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    """``{prefix}.idx``."""
    return Path(f"{prefix}.idx")


class IndexedDatasetWriter:
    """Streams sequences into ``{prefix}.bin``/``.idx`` under temporary names.

    Use as a context manager: leaving the block normally finalizes (renames
    into place), leaving it with an exception deletes the temporary files.

    Args:
        prefix: output path prefix (``prefix.bin`` / ``prefix.idx``).
        dtype: token dtype (see :func:`optimal_dtype`).
    """

    def __init__(self, prefix: str | Path, dtype: type) -> None:
        if dtype not in DTYPE_CODES:
            raise ValueError(f"unsupported dtype {dtype}")
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        self._tmp_bin = Path(f"{prefix}.bin{tag}")
        self._tmp_idx = Path(f"{prefix}.idx{tag}")
        self._tmp_len = Path(f"{prefix}.lengths{tag}")
        self._tmp_doc = Path(f"{prefix}.docs{tag}")
        self._bin = open(self._tmp_bin, "wb")
        self._len = open(self._tmp_len, "wb")
        self._doc = open(self._tmp_doc, "wb")
        self._doc.write(np.zeros(1, dtype=np.int64).tobytes())
        self.sequences = 0
        self.documents = 0
        self.tokens = 0
        self._closed = False

    def add_documents(
        self, tokens: np.ndarray, sequence_lengths: np.ndarray, sequences_per_document: np.ndarray
    ) -> None:
        """Append whole documents.

        Args:
            tokens: all token ids of the documents, concatenated (any integer dtype;
                cast to the dataset dtype).
            sequence_lengths: tokens per sequence, ``sum == len(tokens)``.
            sequences_per_document: sequences per document, ``sum == len(sequence_lengths)``
                (all ones unless sentences were split).
        """
        sequence_lengths = np.asarray(sequence_lengths, dtype=np.int32)
        per_doc = np.asarray(sequences_per_document, dtype=np.int64)
        if int(sequence_lengths.sum(dtype=np.int64)) != len(tokens):
            raise ValueError("sequence lengths do not add up to the number of tokens")
        if int(per_doc.sum()) != len(sequence_lengths):
            raise ValueError("sequences per document do not add up to the number of sequences")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).data)
        self._len.write(np.ascontiguousarray(sequence_lengths).data)
        ends = self.sequences + np.cumsum(per_doc)
        self._doc.write(ends.astype(np.int64).tobytes())
        self.sequences += len(sequence_lengths)
        self.documents += len(per_doc)
        self.tokens += len(tokens)

    def add_dataset(self, prefix: str | Path) -> None:
        """Append every document of an existing dataset with the same dtype (for merging)."""
        index = read_index(prefix)
        if index.dtype != self.dtype:
            raise ValueError(f"{prefix}: dtype {index.dtype} differs from {self.dtype}")
        with open(bin_path(prefix), "rb") as src:
            shutil.copyfileobj(src, self._bin, 16 << 20)
        self._len.write(index.sequence_lengths.tobytes())
        self._doc.write((self.sequences + index.document_indices[1:]).astype(np.int64).tobytes())
        self.sequences += index.sequence_count
        self.documents += index.document_count - 1
        self.tokens += int(index.sequence_lengths.sum(dtype=np.int64))

    def _write_index(self) -> None:
        itemsize = self.dtype.itemsize
        with open(self._tmp_idx, "wb") as out:
            out.write(INDEX_HEADER)
            out.write(struct.pack("<Q", INDEX_VERSION))
            out.write(struct.pack("<B", DTYPE_CODES[self.dtype.type]))
            out.write(struct.pack("<Q", self.sequences))
            out.write(struct.pack("<Q", self.documents + 1))
            with open(self._tmp_len, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
            lengths = np.memmap(self._tmp_len, dtype=np.int32, mode="r") if self.sequences else []
            start = np.int64(0)
            for lo in range(0, self.sequences, _BLOCK):
                block = np.asarray(lengths[lo : lo + _BLOCK], dtype=np.int64) * itemsize
                pointers = np.empty_like(block)
                pointers[0] = 0
                np.cumsum(block[:-1], out=pointers[1:])
                pointers += start
                start = pointers[-1] + block[-1]
                out.write(pointers.tobytes())
            del lengths
            with open(self._tmp_doc, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)

    def finalize(self) -> None:
        """Write the index and rename both files into place (``.bin`` first, then ``.idx``)."""
        if self._closed:
            return
        for handle in (self._bin, self._len, self._doc):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._write_index()
        idx_path(self.prefix).unlink(missing_ok=True)  # a stale index must not pair with a new .bin
        self._tmp_bin.replace(bin_path(self.prefix))
        self._tmp_idx.replace(idx_path(self.prefix))
        self._cleanup()
        self._closed = True

    def abort(self) -> None:
        """Close and delete the temporary files; nothing is renamed."""
        if self._closed:
            return
        for handle in (self._bin, self._len, self._doc):
            handle.close()
        self._cleanup(include_outputs=True)
        self._closed = True

    def _cleanup(self, include_outputs: bool = False) -> None:
        paths = [self._tmp_len, self._tmp_doc]
        if include_outputs:
            paths += [self._tmp_bin, self._tmp_idx]
        for path in paths:
            path.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


@dataclass
class IndexView:
    """The parsed ``.idx`` file (arrays are memory-mapped, read-only)."""

    path: Path
    dtype: np.dtype
    sequence_count: int
    document_count: int
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    file_size: int


class IndexFormatError(ValueError):
    """The ``.idx`` file is not a valid MMIDIDX index."""


def read_index(prefix: str | Path) -> IndexView:
    """Parse ``{prefix}.idx``; raises :class:`IndexFormatError` when it is malformed."""
    path = idx_path(prefix)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise IndexFormatError(f"{path}: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    if head[:9] != INDEX_HEADER:
        raise IndexFormatError(f"{path}: bad magic {head[:9]!r}, expected {INDEX_HEADER!r}")
    (version,) = struct.unpack("<Q", head[9:17])
    if version != INDEX_VERSION:
        raise IndexFormatError(f"{path}: version {version}, expected {INDEX_VERSION}")
    code = head[17]
    if code not in CODE_DTYPES:
        raise IndexFormatError(f"{path}: unknown dtype code {code}")
    seq_count, doc_count = struct.unpack("<QQ", head[18:34])
    expected = HEADER_BYTES + seq_count * (4 + 8) + doc_count * 8
    if expected != size:
        raise IndexFormatError(
            f"{path}: size {size} bytes, but the header's {seq_count} sequences and "
            f"{doc_count} document indices need {expected} bytes"
        )
    buf = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    off = HEADER_BYTES
    lengths = np.frombuffer(buf, dtype=np.int32, count=seq_count, offset=off)
    off += 4 * seq_count
    pointers = np.frombuffer(buf, dtype=np.int64, count=seq_count, offset=off)
    off += 8 * seq_count
    docs = np.frombuffer(buf, dtype=np.int64, count=doc_count, offset=off)
    return IndexView(
        path=path,
        dtype=np.dtype(CODE_DTYPES[code]),
        sequence_count=seq_count,
        document_count=doc_count,
        sequence_lengths=lengths,
        sequence_pointers=pointers,
        document_indices=docs,
        file_size=size,
    )


class IndexedDatasetReader:
    """Read-only access to ``{prefix}.bin``/``.idx`` (no torch needed).

    Args:
        prefix: the dataset path prefix.
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.index = read_index(prefix)
        size = bin_path(prefix).stat().st_size
        self._bin = (
            np.memmap(bin_path(prefix), dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        )

    @property
    def dtype(self) -> np.dtype:
        """Token dtype."""
        return self.index.dtype

    @property
    def num_documents(self) -> int:
        """Number of documents."""
        return self.index.document_count - 1

    def __len__(self) -> int:
        return self.index.sequence_count

    def sequence(self, i: int) -> np.ndarray:
        """Token ids of sequence ``i``."""
        return np.frombuffer(
            self._bin,
            dtype=self.dtype,
            count=int(self.index.sequence_lengths[i]),
            offset=int(self.index.sequence_pointers[i]),
        )

    def document_sequences(self, d: int) -> list[np.ndarray]:
        """The sequences (sentences, or one sequence) of document ``d``."""
        lo, hi = self.index.document_indices[d], self.index.document_indices[d + 1]
        return [self.sequence(i) for i in range(int(lo), int(hi))]

    def document(self, d: int) -> np.ndarray:
        """All token ids of document ``d``."""
        parts = self.document_sequences(d)
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)


def validate_dataset(prefix: str | Path, vocab_size: int | None = None) -> list[str]:
    """Check a dataset's header, pointers, sizes and document indices.

    Args:
        prefix: the dataset path prefix.
        vocab_size: when given, also check that every token id is below it.

    Returns:
        Problems found, the first inconsistency first; empty when the dataset is valid.
    """
    b, i = bin_path(prefix), idx_path(prefix)
    for path in (b, i):
        if not path.is_file():
            return [f"{path}: missing"]
    try:
        index = read_index(prefix)
    except IndexFormatError as err:
        return [str(err)]
    bin_size = b.stat().st_size
    itemsize = index.dtype.itemsize
    lengths, pointers, docs = (
        index.sequence_lengths,
        index.sequence_pointers,
        index.document_indices,
    )
    if index.sequence_count and int(lengths.min()) < 0:
        k = int(np.argmax(lengths < 0))
        return [f"{i}: sequence {k} has negative length {int(lengths[k])}"]
    expected_ptr = np.int64(0)
    for lo in range(0, index.sequence_count, _BLOCK):
        block = lengths[lo : lo + _BLOCK].astype(np.int64) * itemsize
        want = expected_ptr + np.concatenate(([0], np.cumsum(block[:-1])))
        bad = np.nonzero(pointers[lo : lo + _BLOCK] != want)[0]
        if len(bad):
            k = lo + int(bad[0])
            return [
                f"{i}: sequence {k} pointer {int(pointers[k])} != {int(want[bad[0]])} "
                "(sum of the previous lengths x itemsize)"
            ]
        expected_ptr = want[-1] + block[-1]
    if int(expected_ptr) != bin_size:
        return [
            f"{b}: {bin_size} bytes, but the index describes {int(expected_ptr)} bytes "
            f"({index.sequence_count} sequences of {index.dtype})"
        ]
    if index.document_count < 1:
        return [f"{i}: no document indices (need at least the leading 0)"]
    if docs[0] != 0:
        return [f"{i}: document index 0 is {int(docs[0])}, expected 0"]
    if docs[-1] != index.sequence_count:
        return [
            f"{i}: last document index {int(docs[-1])} != sequence count {index.sequence_count}"
        ]
    steps = np.diff(docs)
    if len(steps) and int(steps.min()) < 0:
        k = int(np.argmax(steps < 0))
        return [f"{i}: document indices decrease at document {k}"]
    if vocab_size is not None and bin_size:
        reader = IndexedDatasetReader(prefix)
        tokens = np.frombuffer(reader._bin, dtype=index.dtype)
        for lo in range(0, len(tokens), 16 * _BLOCK):
            block = tokens[lo : lo + 16 * _BLOCK]
            if int(block.max()) >= vocab_size or int(block.min()) < 0:
                k = lo + int(np.argmax((block >= vocab_size) | (block < 0)))
                return [f"{b}: token {k} has id {int(tokens[k])} outside [0, {vocab_size})"]
    return []


def merge_datasets(prefixes: list[str | Path], output_prefix: str | Path) -> IndexView:
    """Concatenate datasets (same dtype) into ``output_prefix``, documents in the given order.

    Returns:
        The merged index.
    """
    if not prefixes:
        raise ValueError("nothing to merge")
    dtypes = {read_index(p).dtype for p in prefixes}
    if len(dtypes) != 1:
        raise ValueError(f"cannot merge datasets of different dtypes: {sorted(map(str, dtypes))}")
    with IndexedDatasetWriter(output_prefix, dtypes.pop().type) as writer:
        for prefix in prefixes:
            writer.add_dataset(prefix)
    return read_index(output_prefix)


def dataset_stats(prefix: str | Path, bins: int = 10) -> dict:
    """Counts, dtype and a document-length histogram (log-spaced bins) of a dataset."""
    index = read_index(prefix)
    docs = index.document_indices
    seq_cum = np.concatenate(([0], np.cumsum(index.sequence_lengths, dtype=np.int64)))
    doc_tokens = seq_cum[docs[1:]] - seq_cum[docs[:-1]] if len(docs) > 1 else np.zeros(0)
    hist: list[dict] = []
    if len(doc_tokens):
        lo, hi = max(int(doc_tokens.min()), 1), max(int(doc_tokens.max()), 1)
        edges = np.unique(np.geomspace(lo, hi + 1, bins + 1).astype(np.int64))
        edges[-1] = hi + 1
        if int(doc_tokens.min()) < edges[0]:  # empty documents
            edges = np.concatenate(([0], edges))
        counts, edges = np.histogram(doc_tokens, bins=edges)
        hist = [
            {"min": int(lo), "max": int(up) - 1, "documents": int(c)}
            for lo, up, c in zip(edges[:-1], edges[1:], counts)
        ]
    return {
        "prefix": str(prefix),
        "dtype": str(index.dtype),
        "documents": int(index.document_count - 1),
        "sequences": int(index.sequence_count),
        "tokens": int(seq_cum[-1]),
        "bin_bytes": int(bin_path(prefix).stat().st_size),
        "document_tokens": {
            "min": int(doc_tokens.min()) if len(doc_tokens) else 0,
            "mean": float(doc_tokens.mean()) if len(doc_tokens) else 0.0,
            "max": int(doc_tokens.max()) if len(doc_tokens) else 0,
        },
        "histogram": hist,
    }
