"""The indexed-dataset writer is byte-compatible with megatron-core; validate/merge/stats."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from megatron_lang.data.indexed import (
    IndexedDatasetReader,
    IndexedDatasetWriter,
    bin_path,
    dataset_stats,
    idx_path,
    merge_datasets,
    optimal_dtype,
    read_index,
    validate_dataset,
)

pytestmark = pytest.mark.unit


def _docs(seed: int, n: int, high: int) -> list[list[np.ndarray]]:
    """n documents of 1-3 sequences of random ids below ``high``."""
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(0, high, size=rng.integers(1, 40)) for _ in range(rng.integers(1, 4))]
        for _ in range(n)
    ]


def _write(prefix, docs, dtype) -> None:
    with IndexedDatasetWriter(prefix, dtype) as w:
        for doc in docs:
            tokens = np.concatenate(doc)
            w.add_documents(tokens, [len(s) for s in doc], [len(doc)])


@pytest.mark.parametrize("vocab", [1000, 65499, 65500, 200_000])
def test_bytes_identical_to_megatron_core_builder(tmp_path, vocab):
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    dtype = optimal_dtype(vocab)
    assert dtype is DType.optimal_dtype(vocab)
    docs = _docs(0, 30, vocab)
    _write(tmp_path / "ours", docs, dtype)
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for doc in docs:
        builder.add_document(torch.from_numpy(np.concatenate(doc)), [len(s) for s in doc])
    builder.finalize(str(tmp_path / "ref.idx"))
    for suffix in (".bin", ".idx"):
        ours = (tmp_path / f"ours{suffix}").read_bytes()
        assert ours == (tmp_path / f"ref{suffix}").read_bytes(), suffix


def test_megatron_core_reads_what_we_write(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = _docs(1, 20, 70_000)
    _write(tmp_path / "d", docs, np.int32)
    ds = IndexedDataset(str(tmp_path / "d"))
    flat = [s for doc in docs for s in doc]
    assert len(ds) == len(flat)
    for i, seq in enumerate(flat):
        np.testing.assert_array_equal(ds[i], seq)
    np.testing.assert_array_equal(ds.document_indices, np.cumsum([0] + [len(d) for d in docs]))


def test_many_sequences_span_index_blocks(tmp_path, monkeypatch):
    import megatron_lang.data.indexed as indexed

    monkeypatch.setattr(indexed, "_BLOCK", 7)  # exercise the blockwise pointer assembly
    docs = _docs(2, 50, 1000)
    _write(tmp_path / "d", docs, np.uint16)
    assert validate_dataset(tmp_path / "d") == []
    reader = IndexedDatasetReader(tmp_path / "d")
    for d, doc in enumerate(docs):
        np.testing.assert_array_equal(reader.document(d), np.concatenate(doc))


def test_empty_dataset_is_valid(tmp_path):
    _write(tmp_path / "e", [], np.uint16)
    assert validate_dataset(tmp_path / "e") == []
    assert read_index(tmp_path / "e").document_count == 1


def test_exception_leaves_no_output_and_no_temporaries(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(tmp_path / "x", np.uint16) as w:
            w.add_documents(np.arange(5), [5], [1])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_finalize_replaces_a_stale_pair(tmp_path):
    _write(tmp_path / "d", _docs(3, 5, 100), np.uint16)
    new = _docs(4, 9, 100)
    _write(tmp_path / "d", new, np.uint16)
    assert read_index(tmp_path / "d").document_count == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]


def test_validate_catches_truncated_bin(tmp_path):
    _write(tmp_path / "d", _docs(5, 10, 1000), np.uint16)
    data = bin_path(tmp_path / "d").read_bytes()
    bin_path(tmp_path / "d").write_bytes(data[:-3])
    problems = validate_dataset(tmp_path / "d")
    assert problems and "bytes, but the index describes" in problems[0]


@pytest.mark.parametrize(
    "offset,value,expect",
    [
        (0, b"XMIDIDX\x00\x00", "bad magic"),
        (9, struct.pack("<Q", 2), "version 2"),
        (17, b"\x63", "unknown dtype code 99"),
        (18, struct.pack("<Q", 10**6), "need"),
        (17, b"\x04", "sequence 1 pointer"),  # uint16 -> int32: pointers no longer match
        ("pointer", None, "pointer"),
        ("lastdoc", None, "last document index"),
    ],
)
def test_validate_catches_corrupted_idx(tmp_path, offset, value, expect):
    prefix = tmp_path / "d"
    _write(prefix, _docs(6, 10, 1000), np.uint16)
    raw = bytearray(idx_path(prefix).read_bytes())
    index = read_index(prefix)
    if offset == "pointer":
        offset = 34 + 4 * index.sequence_count + 8 * 3  # the 4th sequence pointer
        value = struct.pack("<q", int(index.sequence_pointers[3]) + 2)
    elif offset == "lastdoc":
        offset = len(raw) - 8
        value = struct.pack("<q", index.sequence_count - 1)
    del index
    raw[offset : offset + len(value)] = value
    idx_path(prefix).write_bytes(bytes(raw))
    problems = validate_dataset(prefix)
    assert problems and expect in problems[0], problems


def test_validate_checks_token_range_and_missing_files(tmp_path):
    _write(tmp_path / "d", [[np.array([1, 2, 999])]], np.uint16)
    assert validate_dataset(tmp_path / "d", vocab_size=1000) == []
    assert "outside [0, 999)" in validate_dataset(tmp_path / "d", vocab_size=999)[0]
    assert "missing" in validate_dataset(tmp_path / "nothing")[0]


def test_merge_equals_concatenation(tmp_path):
    parts = [_docs(10 + i, 5 + i, 1000) for i in range(3)]
    for i, docs in enumerate(parts):
        _write(tmp_path / f"p{i}", docs, np.uint16)
    merge_datasets([tmp_path / f"p{i}" for i in range(3)], tmp_path / "m")
    _write(tmp_path / "all", [d for docs in parts for d in docs], np.uint16)
    assert validate_dataset(tmp_path / "m") == []
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"m{suffix}").read_bytes() == (tmp_path / f"all{suffix}").read_bytes()


def test_merge_refuses_mixed_dtypes(tmp_path):
    _write(tmp_path / "a", _docs(1, 2, 100), np.uint16)
    _write(tmp_path / "b", _docs(1, 2, 100), np.int32)
    with pytest.raises(ValueError, match="different dtypes"):
        merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert not bin_path(tmp_path / "m").exists()


def test_stats_counts_and_histogram(tmp_path):
    docs = _docs(7, 40, 1000)
    _write(tmp_path / "d", docs, np.uint16)
    stats = dataset_stats(tmp_path / "d", bins=5)
    lengths = [sum(len(s) for s in doc) for doc in docs]
    assert stats["documents"] == 40
    assert stats["sequences"] == sum(len(d) for d in docs)
    assert stats["tokens"] == sum(lengths)
    assert stats["dtype"] == "uint16"
    assert stats["document_tokens"]["max"] == max(lengths)
    assert sum(b["documents"] for b in stats["histogram"]) == 40
