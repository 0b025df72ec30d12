"""Readers: every input format gives the same records; bad documents give precise errors."""

from __future__ import annotations

import gzip
import json

import pytest

from megatron_lang.data import readers
from megatron_lang.data.readers import DocError, InputError, iter_chunks, iter_records, parse_chunk

pytestmark = pytest.mark.unit


def _records(path, keys=None, **kw):
    errors: list[DocError] = []
    recs = list(iter_records([path], keys, errors=errors, **kw))
    return recs, errors


def test_formats_agree(tmp_path, gimp_jsonl, gimp_texts):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    raw = gimp_jsonl.read_bytes()
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    pq.write_table(pa.table({"text": gimp_texts}), tmp_path / "c.parquet", row_group_size=7)
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, text in enumerate(gimp_texts):
        (txt / f"{i:04d}.txt").write_text(text)
    for path in [gimp_jsonl, *(tmp_path / f"c.{s}" for s in ("jsonl.gz", "jsonl.zst", "parquet"))]:
        recs, errors = _records(path)
        assert errors == []
        assert [r.doc["text"] for r in recs] == gimp_texts, path
        assert [r.line for r in recs] == list(range(1, len(gimp_texts) + 1))
    recs, errors = _records(txt)
    assert [r.doc["text"] for r in recs] == gimp_texts and errors == []
    assert recs[3].source == str(txt / "0003.txt")


def test_small_chunks_keep_line_numbers(gimp_jsonl, gimp_texts):
    chunks = list(iter_chunks([gimp_jsonl], ["text"], chunk_bytes=1000))
    assert len(chunks) > 10
    parsed = [parse_chunk(c, ["text"], 0) for c in chunks]
    lines = [n for p in parsed for n in p.lines]
    assert lines == list(range(1, len(gimp_texts) + 1))
    assert sum(c.input_bytes for c in chunks) == gimp_jsonl.stat().st_size


def test_arrow_fast_path_equals_exact_path(gimp_jsonl):
    for chunk in iter_chunks([gimp_jsonl], ["text", "lang"], chunk_bytes=50_000):
        fast = readers._parse_jsonl_arrow(chunk, ["text", "lang"], None)
        assert fast is not None
        exact = parse_chunk(chunk, ["text", "lang"], 0, fast=False)
        assert (fast.texts, fast.lines, fast.sources) == (exact.texts, exact.lines, exact.sources)


BAD_LINES = [
    (b'{"text": "ok"', readers.MALFORMED_JSON, "Expecting"),
    (b'["text"]', readers.NOT_AN_OBJECT, "list"),
    (b'{"title": "no text"}', readers.MISSING_KEY, "'text' is missing"),
    (b'{"text": null}', readers.MISSING_KEY, "null"),
    (b'{"text": 42}', readers.NON_STRING_KEY, "int"),
    (b'{"text": ["a"]}', readers.NON_STRING_KEY, "list"),
    (b'{"text": "caf\xe9"}', readers.INVALID_UTF8, "0xe9"),
    (b'{"text": "lone \\ud800 surrogate"}', readers.INVALID_UTF8, "surrogate"),
    (b'{"text": ""}', readers.EMPTY_DOCUMENT, "empty"),
    (b'{"text": "  \\n\\t "}', readers.EMPTY_DOCUMENT, "empty"),
]


@pytest.mark.parametrize("bad,reason,detail", BAD_LINES, ids=[b[1] for b in BAD_LINES])
def test_bad_jsonl_line_is_reported_with_file_line_reason(tmp_path, bad, reason, detail):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "first"}\n{"text": "second"}\n' + bad + b'\n{"text": "last"}\n')
    recs, errors = _records(path)
    assert [r.doc["text"] for r in recs] == ["first", "second", "last"]
    assert [r.line for r in recs] == [1, 2, 4]
    assert len(errors) == 1
    err = errors[0]
    assert (err.source, err.line, err.reason) == (str(path), 3, reason)
    assert detail in err.detail
    assert str(err).startswith(f"{path}:3: {reason}:")
    with pytest.raises(InputError, match=f"bad.jsonl:3: {reason}"):
        list(iter_records([path]))


def test_blank_lines_are_not_documents(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}')
    recs, errors = _records(path)
    assert [(r.line, r.doc["text"]) for r in recs] == [(1, "a"), (4, "b")] and errors == []


def test_multiple_keys_must_all_be_valid(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text(
        json.dumps({"text": "t1", "title": "h1"})
        + "\n"
        + json.dumps({"text": "t2"})
        + "\n"
        + json.dumps({"text": "t3", "title": "h3"})
        + "\n"
    )
    recs, errors = _records(path, ["text", "title"])
    assert [r.doc for r in recs] == [{"text": "t1", "title": "h1"}, {"text": "t3", "title": "h3"}]
    assert [(e.line, e.reason) for e in errors] == [(2, readers.MISSING_KEY)]


def test_huge_line_is_streamed_not_held(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "small"}\n{"text": "')
        f.write(b"ab " * 1_000_000)  # a 3 MB document
        f.write(b'"}\n{"text": "after"}\n')
    chunks = list(iter_chunks([path], ["text"], chunk_bytes=64_000, max_document_bytes=100_000))
    assert max(len(c.payload) for c in chunks) < 300_000  # never held the 3 MB line
    recs, errors = _records(path, max_document_bytes=100_000)
    assert [(r.line, r.doc["text"]) for r in recs] == [(1, "small"), (3, "after")]
    assert [(e.line, e.reason) for e in errors] == [(2, readers.DOCUMENT_TOO_LARGE)]
    assert "3000012 bytes > --max-document-bytes 100000" in errors[0].detail
    recs, errors = _records(path, max_document_bytes=0)  # no limit: it is a document
    assert len(recs) == 3 and errors == []


def test_text_files_invalid_utf8_names_the_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"fine\nline two \xff here\n")
    (tmp_path / "b.txt").write_bytes(b"")
    (tmp_path / "c.txt").write_text("good text")
    recs, errors = _records(tmp_path)
    assert [r.doc["text"] for r in recs] == ["good text"]
    assert [(e.source.rsplit("/", 1)[1], e.line, e.reason) for e in errors] == [
        ("a.txt", 2, readers.INVALID_UTF8),
        ("b.txt", 1, readers.EMPTY_DOCUMENT),
    ]


def test_parquet_missing_and_non_string_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]}), tmp_path / "p.parquet")
    recs, errors = _records(tmp_path / "p.parquet")
    assert [(r.line, r.doc["text"]) for r in recs] == [(1, "a"), (3, "c")]
    assert [(e.line, e.reason) for e in errors] == [(2, readers.MISSING_KEY)]
    _, errors = _records(tmp_path / "p.parquet", ["n"])
    assert {e.reason for e in errors} == {readers.NON_STRING_KEY}
    _, errors = _records(tmp_path / "p.parquet", ["absent"])
    assert len(errors) == 3 and "column 'absent' is missing" in errors[0].detail


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        readers.expand_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="unsupported"):
        readers.expand_inputs([tmp_path / "x.csv"])
    with pytest.raises(InputError, match="folder has no"):
        readers.expand_inputs([tmp_path])


def test_line_over_the_limit_inside_a_chunk(tmp_path):
    path = tmp_path / "l.jsonl"
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(50)]
    lines[20] = json.dumps({"text": "x" * 2000})
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_chunks([path], ["text"], chunk_bytes=10_000, max_document_bytes=500))
    assert len(chunks) == 1 and len(chunks[0].payload) > 500  # the long line is in the chunk
    assert readers._parse_jsonl_arrow(chunks[0], ["text"], 500) is None
    recs, errors = _records(path, max_document_bytes=500)
    assert len(recs) == 49 and [(e.line, e.reason) for e in errors] == [(21, "document_too_large")]


# Damaged containers are not bad documents: they raise ContainerError naming the file (and
# the line, byte or row where reading stopped) with and without an error list (skip mode).


def _both_modes(path, match):
    """The same ContainerError whether bad documents are collected (skip) or raised (fail)."""
    for errors in ([], None):
        with pytest.raises(readers.ContainerError, match=match):
            list(iter_records([path], errors=errors))


def test_truncated_gzip_names_file_and_line(tmp_path, gimp_jsonl):
    raw = gimp_jsonl.read_bytes()
    compressed = gzip.compress(raw)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    _both_modes(path, f"^{path}: corrupt or truncated gzip data: .*EOFError")
    # With small chunks, the line where reading stopped and its byte offset are exact.
    with pytest.raises(readers.ContainerError) as info:
        list(iter_chunks([path], ["text"], chunk_bytes=20_000))
    msg = str(info.value)
    line = int(msg.split("in or after line ")[1].split(" ")[0])
    byte = int(msg.split("uncompressed byte ")[1].split(";")[0])
    assert line > 1 and raw[:byte].count(b"\n") == line - 1 and raw[byte - 1 : byte] == b"\n"
    assert f"{len(path.read_bytes())} of {path.stat().st_size} compressed bytes read" in msg


def test_corrupt_gzip_crc_names_file(tmp_path, gimp_jsonl):
    compressed = bytearray(gzip.compress(gimp_jsonl.read_bytes()))
    compressed[-8:-4] = bytes(4)  # the CRC32 of the member
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(compressed))
    _both_modes(path, f"^{path}: corrupt or truncated gzip data: .*CRC check failed")


def test_garbage_parquet_names_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"not a parquet file, just some text\n" * 20)
    _both_modes(path, f"^{path}: not a readable parquet file: .*magic bytes")


def test_corrupt_parquet_page_names_file_and_row(tmp_path, gimp_texts):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pages.parquet"
    table = pa.table({"text": gimp_texts})
    pq.write_table(
        table,
        path,
        row_group_size=7,
        compression="none",
        use_dictionary=False,  # one data page per column chunk
        write_page_checksum=True,
    )
    column = pq.ParquetFile(path).metadata.row_group(5).column(0)  # rows 36-42
    middle = column.data_page_offset + column.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    _both_modes(path, f"^{path}: corrupt parquet data in the rows from row ")
    with pytest.raises(readers.ContainerError, match=f"from row 36 \\(of {len(gimp_texts)}\\)"):
        list(iter_chunks([path], ["text"], chunk_bytes=7 * 4096))  # batches = row groups


def test_corrupt_zstd_frame_names_file(tmp_path, gimp_jsonl):
    import zstandard

    compressed = bytearray(
        zstandard.ZstdCompressor(write_checksum=True).compress(gimp_jsonl.read_bytes())
    )
    middle = len(compressed) // 2
    compressed[middle : middle + 16] = bytes(16)
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(bytes(compressed))
    _both_modes(path, f"^{path}: corrupt zstd data: reading stopped in or after line 1 .*ZstdError")


def test_truncated_zstd_names_file_and_byte(tmp_path, gimp_jsonl):
    """python-zstandard's reader ends silently inside a frame: the frame walk catches it."""
    import zstandard

    compressed = zstandard.ZstdCompressor().compress(gimp_jsonl.read_bytes())
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(compressed[: len(compressed) // 2])
    size = len(compressed) // 2
    _both_modes(
        path,
        f"^{path}: truncated zstd data: the file ends at byte {size}, inside the frame that starts at byte 0",
    )


def test_zstd_without_checksum_is_reported(tmp_path, gimp_jsonl, caplog, monkeypatch):
    """Corruption the decoder misses in a frame without checksum can only show up as bad
    documents, so such files are named in a warning."""
    import zstandard

    monkeypatch.setattr(readers, "_warned_no_checksum", False)
    raw = gimp_jsonl.read_bytes()
    checked = tmp_path / "checked.jsonl.zst"
    checked.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    unchecked = tmp_path / "unchecked.jsonl.zst"
    unchecked.write_bytes(zstandard.ZstdCompressor().compress(raw))
    with caplog.at_level("WARNING", logger="megatron_lang.data.readers"):
        assert len(_records(checked)[0]) == len(_records(unchecked)[0]) == raw.count(b"\n")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(unchecked)]
