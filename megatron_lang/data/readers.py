"""Streaming readers for text corpora: JSONL (plain, ``.gz``, ``.zst``), parquet, ``.txt`` folders.

Files are read in *chunks* of a few MB (raw JSONL lines, parquet row batches,
or groups of ``.txt`` files) so that memory stays bounded whatever the corpus
size; :func:`parse_chunk` turns a chunk into documents plus precise errors
(file, line, reason).  The preprocessing pipeline ships chunks to worker
processes; :func:`iter_records` is the simple record-by-record interface.

Error reasons (the keys counted in the preprocessing summary) are the
``REASON_*`` constants below.  A damaged *container* (a truncated or corrupt gzip or
zstd stream, a file named ``.parquet`` that is not parquet or has a corrupt page) is not
a bad document: it raises :class:`ContainerError`, naming the file and where reading
stopped, whatever the error mode.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_KEY = "missing_key"
NON_STRING_KEY = "non_string_key"
INVALID_UTF8 = "invalid_utf8"
EMPTY_DOCUMENT = "empty_document"
DOCUMENT_TOO_LARGE = "document_too_large"
REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_KEY,
    NON_STRING_KEY,
    INVALID_UTF8,
    EMPTY_DOCUMENT,
    DOCUMENT_TOO_LARGE,
)

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt",)
DEFAULT_CHUNK_BYTES = 4 << 20
DEFAULT_MAX_DOCUMENT_BYTES = 32 << 20


class InputError(ValueError):
    """An input file or path that cannot be read at all (not a per-document problem)."""


class ContainerError(InputError):
    """A corrupt or truncated compressed stream or parquet file (raised in skip mode too:
    the documents in or after the damage are unknown, so it is not a bad document)."""


@dataclass(frozen=True)
class DocError:
    """One bad document: where it is and why."""

    source: str
    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class Record:
    """One input document: ``doc`` maps each requested key to its text."""

    source: str
    line: int
    doc: dict[str, str]


@dataclass
class Chunk:
    """A slice of one input file, self-contained so a worker process can parse it."""

    source: str
    kind: str  # "jsonl" | "rows" | "text"
    first_line: int
    payload: Any
    input_bytes: int  # uncompressed bytes of input this chunk covers
    oversized: dict[int, int] = field(default_factory=dict)  # line -> size, dropped lines
    newlines: int = -1  # newline characters in a JSONL payload, when counted already


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files to read: each input file as given, each folder's supported files sorted by path.

    Raises:
        InputError: a path that does not exist, an unsupported file, or a folder without
            supported files.
    """
    files: list[Path] = []
    supported = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _has_suffix(p, supported))
            if not found:
                raise InputError(f"{path}: folder has no {', '.join(supported)} files")
            files.extend(found)
        elif path.is_file():
            if not _has_suffix(path, supported):
                raise InputError(f"{path}: unsupported file type (expected {', '.join(supported)})")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


_ZSTD_MAGIC = 0xFD2FB528
_warned_no_checksum = False


def _check_zstd_frames(path: Path) -> bool:
    """Walk the frame and block headers of a ``.zst`` file (seeks, no decoding).

    python-zstandard's stream reader ends silently when the file ends inside a frame, so a
    truncated file would read as a shorter (or empty) corpus; the headers tell.

    Returns:
        whether every frame carries a content checksum (the ``zstd`` CLI writes one;
        python-zstandard only with ``write_checksum=True``).

    Raises:
        ContainerError: the file ends inside a frame, or holds something that is not a
            zstd frame or has an invalid block header (with the byte offset).
    """
    size = path.stat().st_size
    all_checksummed = True
    with open(path, "rb") as f:

        def read(pos: int, n: int, start: int) -> int:
            f.seek(pos)
            data = f.read(n)
            if len(data) < n:
                raise ContainerError(
                    f"{path}: truncated zstd data: the file ends at byte {size}, inside the "
                    f"frame that starts at byte {start}"
                )
            return int.from_bytes(data, "little")

        pos = 0
        while pos < size:
            start = pos
            magic = read(pos, 4, start)
            if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame: magic, size, data
                pos += 8 + read(pos + 4, 4, start)
                if pos > size:
                    read(pos - 1, 1, start)
                continue
            if magic != _ZSTD_MAGIC:
                raise ContainerError(
                    f"{path}: corrupt zstd data: byte {start} does not start a zstd frame "
                    f"(magic {magic:#010x})"
                )
            descriptor = read(pos + 4, 1, start)
            single_segment = (descriptor >> 5) & 1
            checksum = (descriptor >> 2) & 1
            content_size = (single_segment, 2, 4, 8)[descriptor >> 6]
            pos += 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + content_size
            while True:
                header = read(pos, 3, start)
                block_type, block_size = (header >> 1) & 3, header >> 3
                if block_type == 3:
                    raise ContainerError(
                        f"{path}: corrupt zstd data: invalid block header at byte {pos}"
                    )
                pos += 3 + (1 if block_type == 1 else block_size)
                if header & 1:  # last block of the frame
                    break
            pos += 4 * checksum
            if pos > size:
                read(pos - 1, 1, start)
            all_checksummed &= bool(checksum)
    return all_checksummed


def _open_decoded(path: Path, raw: BinaryIO) -> BinaryIO:
    """The uncompressed bytes of ``raw`` (the open file ``path``)."""
    global _warned_no_checksum
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        if not _check_zstd_frames(path) and not _warned_no_checksum:
            _warned_no_checksum = True
            logger.warning(
                "%s: zstd frame(s) without a content checksum: corruption inside them that "
                "the decoder does not notice shows up as bad documents, not as a container "
                "error (the zstd CLI writes checksums; this is reported once per process)",
                path,
            )
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return io.BufferedReader(reader)  # type: ignore[arg-type]
    return raw


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged gzip/zstd stream (or a failing disk) raises."""
    import zstandard

    return (EOFError, OSError, zlib.error, zstandard.ZstdError)


def _jsonl_chunks(path: Path, chunk_bytes: int, max_document_bytes: int) -> Iterator[Chunk]:
    """Blocks of whole lines; a line longer than the limit is never held in memory.

    Raises:
        ContainerError: the (compressed) file cannot be read to its end; the message names
            the line where reading stopped and the bytes read before.
    """
    source = str(path)
    line_no = 1
    done = 0  # uncompressed bytes before ``pending``
    errors = _decode_errors()
    with open(path, "rb") as raw, _open_decoded(path, raw) as f:

        def read(n: int, line: bool = False) -> bytes:
            try:
                return f.readline(n) if line else f.read(n)
            except errors as err:
                raise ContainerError(_read_failure(path, raw, line_no, done, err)) from err

        pending = b""
        while True:
            block = read(chunk_bytes)
            eof = not block
            buf = pending + block
            cut = len(buf) if eof else buf.rfind(b"\n") + 1
            if cut == 0 and max_document_bytes and len(buf) > max_document_bytes:
                # One huge line: drain it without keeping it, report it as oversized.
                size = len(buf)
                while True:
                    more = read(chunk_bytes, line=True)
                    size += len(more)
                    if not more or more.endswith(b"\n"):
                        newline = more.endswith(b"\n")
                        size -= newline  # the newline is not part of the line
                        break
                yield Chunk(source, "jsonl", line_no, b"\n", size, {line_no: size})
                line_no += 1
                done += size + newline
                pending = b""
                continue
            if cut:
                data = buf[:cut]
                newlines = data.count(b"\n")
                yield Chunk(source, "jsonl", line_no, data, len(data), newlines=newlines)
                line_no += newlines + (0 if data.endswith(b"\n") else 1)
                done += cut
            pending = buf[cut:]
            if eof:
                return


def _read_failure(path: Path, raw: BinaryIO, line: int, done: int, err: BaseException) -> str:
    """``FILE: what: where: cause`` for a stream that cannot be read to its end."""
    name = path.name.lower()
    size = path.stat().st_size
    what, unit = "read error", "bytes"
    if name.endswith(".gz"):
        what, unit = "corrupt or truncated gzip data", "compressed bytes"
    elif name.endswith(".zst"):
        what, unit = "corrupt zstd data", "compressed bytes"
    return (
        f"{path}: {what}: reading stopped in or after line {line} (which starts at uncompressed "
        f"byte {done}; {raw.tell()} of {size} {unit} read): {type(err).__name__}: {err}"
    )


def _parquet_chunks(path: Path, keys: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """Row batches; page checksums are verified where the writer stored them.

    Raises:
        ContainerError: not a parquet file, or a page that cannot be read (naming the
            first row of the batch).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = (pa.ArrowException, OSError)
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except errors as err:
        raise ContainerError(f"{path}: not a readable parquet file: {err}") from err
    present = [k for k in keys if k in pf.schema_arrow.names]
    row = 1
    batches = pf.iter_batches(batch_size=chunk_rows, columns=present or None)
    while True:
        try:
            batch = next(batches, None)
        except errors as err:
            raise ContainerError(
                f"{path}: corrupt parquet data in the rows from row {row} "
                f"(of {pf.metadata.num_rows}): {type(err).__name__}: {err}"
            ) from err
        if batch is None:
            return
        payload: dict[str, list | None] = {}
        for key in keys:
            payload[key] = batch.column(key).to_pylist() if key in present else None
        size = sum(batch.column(k).nbytes for k in present) if present else 0
        yield Chunk(str(path), "rows", row, (batch.num_rows, payload), size)
        row += batch.num_rows


def _text_chunks(paths: list[Path], chunk_bytes: int, max_document_bytes: int) -> Iterator[Chunk]:
    group: list[tuple[str, bytes | None]] = []
    size = 0
    oversized: dict[int, int] = {}
    for path in paths:
        nbytes = path.stat().st_size
        if max_document_bytes and nbytes > max_document_bytes:
            group.append((str(path), None))
            oversized[len(group) - 1] = nbytes
        else:
            group.append((str(path), path.read_bytes()))
        size += nbytes
        if size >= chunk_bytes:
            yield Chunk("", "text", 1, group, size, oversized)
            group, size, oversized = [], 0, {}
    if group:
        yield Chunk("", "text", 1, group, size, oversized)


def iter_chunks(
    files: list[Path],
    keys: list[str],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> Iterator[Chunk]:
    """Chunks of all ``files`` in order (consecutive ``.txt`` files are grouped).

    Args:
        files: from :func:`expand_inputs`.
        keys: JSON keys / parquet columns holding the text.
        chunk_bytes: target uncompressed bytes per chunk.
        max_document_bytes: lines (JSONL) or files (``.txt``) above this are not
            read into memory but reported as ``document_too_large``; 0 = no limit.
    """
    i = 0
    while i < len(files):
        path = files[i]
        if _has_suffix(path, TEXT_SUFFIXES):
            j = i
            while j < len(files) and _has_suffix(files[j], TEXT_SUFFIXES):
                j += 1
            if keys and len(keys) > 1:
                raise InputError(f"{path}: plain-text files hold one text, not keys {keys}")
            yield from _text_chunks(files[i:j], chunk_bytes, max_document_bytes)
            i = j
            continue
        if _has_suffix(path, PARQUET_SUFFIXES):
            yield from _parquet_chunks(path, keys, max(1, chunk_bytes // 4096))
        else:
            yield from _jsonl_chunks(path, chunk_bytes, max_document_bytes)
        i += 1


def _check_text(value: Any, key: str) -> tuple[str | None, str, str]:
    """``(text, reason, detail)``; text is None when the value is unusable."""
    if value is None:
        return None, MISSING_KEY, f"key {key!r} is missing or null"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, INVALID_UTF8, f"key {key!r}: {err}"
    if not isinstance(value, str):
        return None, NON_STRING_KEY, f"key {key!r} holds a {type(value).__name__}, not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return None, INVALID_UTF8, f"key {key!r}: {err.reason} at character {err.start}"
    if not value.strip():
        return None, EMPTY_DOCUMENT, f"key {key!r} is empty"
    return value, "", ""


def _parse_json_line(line: bytes, keys: list[str]) -> tuple[list[str] | None, str, str]:
    try:
        obj = json.loads(line)
    except UnicodeDecodeError as err:
        return None, INVALID_UTF8, str(err)
    except ValueError as err:
        return None, MALFORMED_JSON, str(err)
    if not isinstance(obj, dict):
        return None, NOT_AN_OBJECT, f"line holds a JSON {type(obj).__name__}, not an object"
    texts = []
    for key in keys:
        text, reason, detail = _check_text(obj.get(key), key)
        if text is None:
            if reason == MISSING_KEY and key not in obj:
                detail = f"key {key!r} is missing (keys: {sorted(obj)[:8]})"
            return None, reason, detail
        texts.append(text)
    return texts, "", ""


@dataclass
class ParsedChunk:
    """Documents of a chunk, aligned across keys, and the errors in input order."""

    sources: list[str]
    lines: list[int]
    texts: list[list[str]]  # per document, one text per key (empty when ``arrow`` is set)
    errors: list[DocError]
    blank_lines: int = 0
    arrow: list | None = None  # per key, a pyarrow StringArray of all documents (fast path)

    def key_texts(self, k: int) -> list[str]:
        """The texts of key number ``k``, one per document."""
        if self.arrow is not None:
            return self.arrow[k].to_pylist()
        return [t[k] for t in self.texts]


def _parse_jsonl_arrow(
    chunk: Chunk, keys: list[str], limit: int | None, keep_arrow: bool = False
) -> ParsedChunk | None:
    """Fast path for clean JSONL chunks with pyarrow's JSON reader.

    Returns None (so the exact line-by-line path runs) whenever the chunk holds anything
    unusual: a parse error, invalid UTF-8 or surrogates, a null/missing/non-string key,
    blank lines or several objects on a line, an empty or over-long document.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    data: bytes = chunk.payload
    if chunk.oversized or not data:
        return None
    newlines = chunk.newlines if chunk.newlines >= 0 else data.count(b"\n")
    n_lines = newlines + (0 if data.endswith(b"\n") else 1)
    if limit and len(data) > limit:  # only then can a line be over the limit
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        ends = np.append(newlines, len(data))
        if int(np.diff(ends, prepend=-1).max()) - 1 > limit:
            return None
    schema = pa.schema([(k, pa.string()) for k in keys])
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != n_lines:
        return None
    columns = []
    try:
        for key in keys:
            col = table.column(key).combine_chunks()
            col.validate(full=True)  # the JSON reader does not check UTF-8 by itself
            if col.null_count:
                return None
            # empty, or only whitespace (same characters as Python's str.strip())
            blank = pc.or_(pc.equal(pc.binary_length(col), 0), pc.utf8_is_space(col))
            if pc.any(blank).as_py():
                return None
            columns.append(col if keep_arrow else col.to_pylist())
    except (pa.ArrowException, ValueError):
        return None
    lines = list(range(chunk.first_line, chunk.first_line + n_lines))
    if keep_arrow:
        return ParsedChunk([chunk.source] * n_lines, lines, [], [], arrow=columns)
    return ParsedChunk([chunk.source] * n_lines, lines, [list(t) for t in zip(*columns)], [])


def parse_chunk(
    chunk: Chunk,
    keys: list[str],
    max_document_bytes: int,
    fast: bool = True,
    keep_arrow: bool = False,
) -> ParsedChunk:
    """Parse a chunk into documents and errors (never raises for bad documents).

    Args:
        chunk: from :func:`iter_chunks`.
        keys: the keys to read.
        max_document_bytes: limit on one JSON line / text file; 0 = none.
        fast: try pyarrow's JSON reader first for JSONL chunks (same results; the
            exact Python path runs for any chunk with a problem in it).
        keep_arrow: on the fast path, return the texts as pyarrow arrays in ``arrow``
            instead of Python strings (for backends that take them without copies).
    """
    out = ParsedChunk([], [], [], [])
    limit = max_document_bytes or None

    def add(source: str, line: int, texts: list[str] | None, reason: str, detail: str) -> None:
        if texts is None:
            out.errors.append(DocError(source, line, reason, detail))
        else:
            out.sources.append(source)
            out.lines.append(line)
            out.texts.append(texts)

    if chunk.kind == "jsonl" and fast:
        parsed = _parse_jsonl_arrow(chunk, keys, limit, keep_arrow)
        if parsed is not None:
            return parsed
    if chunk.kind == "jsonl":
        complete_lines = chunk.newlines if chunk.newlines >= 0 else chunk.payload.count(b"\n")
        for offset, line in enumerate(chunk.payload.split(b"\n")):
            line_no = chunk.first_line + offset
            if line_no in chunk.oversized or (limit and len(line) > limit):
                size = chunk.oversized.get(line_no, len(line))
                add(chunk.source, line_no, None, DOCUMENT_TOO_LARGE, _too_large(size, limit))
            elif not line.strip():
                if offset < complete_lines:
                    out.blank_lines += 1
            else:
                add(chunk.source, line_no, *_parse_json_line(line, keys))
    elif chunk.kind == "rows":
        num_rows, columns = chunk.payload
        for r in range(num_rows):
            texts: list[str] | None = []
            reason = detail = ""
            for key in keys:
                col = columns[key]
                text, reason, detail = _check_text(None if col is None else col[r], key)
                if col is None:
                    detail = f"column {key!r} is missing"
                if text is None or (limit and len(text) > limit):
                    if text is not None:
                        reason, detail = DOCUMENT_TOO_LARGE, _too_large(len(text), limit)
                    texts = None
                    break
                texts.append(text)
            add(chunk.source, chunk.first_line + r, texts, reason, detail)
    else:
        for i, (source, data) in enumerate(chunk.payload):
            if data is None:
                add(source, 1, None, DOCUMENT_TOO_LARGE, _too_large(chunk.oversized[i], limit))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                line = data.count(b"\n", 0, err.start) + 1
                add(source, line, None, INVALID_UTF8, str(err))
                continue
            if not text.strip():
                add(source, 1, None, EMPTY_DOCUMENT, "file is empty")
            else:
                add(source, 1, [text], "", "")
    return out


def _too_large(size: int, limit: int | None) -> str:
    return f"{size} bytes > --max-document-bytes {limit}"


def iter_records(
    inputs: list[str | Path],
    keys: list[str] | None = None,
    errors: list[DocError] | None = None,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> Iterator[Record]:
    """Stream the documents of files/folders one by one.

    Args:
        inputs: files and folders (see :func:`expand_inputs`).
        keys: JSON keys / parquet columns to read (default ``["text"]``).
        errors: when given, bad documents are appended to it and skipped; when
            None the first bad document raises :class:`InputError`.
        max_document_bytes: see :func:`iter_chunks`.

    Yields:
        :class:`Record` ``(source, line, doc)`` in file order.
    """
    keys = keys or ["text"]
    for chunk in iter_chunks(expand_inputs(inputs), keys, max_document_bytes=max_document_bytes):
        parsed = parse_chunk(chunk, keys, max_document_bytes)
        bad = {(e.source, e.line): e for e in parsed.errors}
        if bad and errors is None:
            raise InputError(str(parsed.errors[0]))
        if errors is not None:
            errors.extend(parsed.errors)
        for source, line, texts in zip(parsed.sources, parsed.lines, parsed.texts):
            yield Record(source, line, dict(zip(keys, texts)))
