"""Text corpora -> Megatron indexed datasets, in parallel, streaming, with per-document errors.

The pipeline: the main process cuts the inputs into chunks of a few MB
(:func:`megatron_lang.data.readers.iter_chunks`); worker processes parse,
validate, optionally sentence-split and tokenize each chunk
(:func:`process_chunk`); the main process writes the results *in chunk order*
(a bounded window of chunks is in flight), so the output does not depend on
the number of workers and memory does not depend on the corpus size.

One dataset is written per JSON key, named like Megatron-LM's
``tools/preprocess_data.py``: ``{prefix}_{key}_document`` (or ``_sentence``
with ``--split-sentences``).  A summary JSON goes to ``{prefix}_summary.json``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import resource
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from megatron_lang.data import readers
from megatron_lang.data.indexed import IndexedDatasetWriter, optimal_dtype
from megatron_lang.data.tokenizer import TextTokenizer, TokenizerSpec, load_tokenizer

# A plain stdlib logger under the ``megatron_lang`` hierarchy (the platform's handler applies once
# ``megatron_lang.platform.logging`` is configured, as the CLIs do).  Importing the platform
# package here would load torch in every preprocessing worker process.
logger = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")


class PreprocessError(RuntimeError):
    """A bad document in ``--on-error fail`` mode, or an unusable configuration."""


@dataclass
class PreprocessConfig:
    """Options of :func:`preprocess` (the CLI flags of ``tools/preprocess/preprocess_data.py``)."""

    inputs: list[str]
    """Input files and folders (JSONL, .jsonl.gz, .jsonl.zst, parquet, folders of .txt)."""
    output_prefix: str
    """Outputs are ``{output_prefix}_{key}_{document|sentence}.bin/.idx``."""
    tokenizer: str
    """HF tokenizer directory or tokenizer.json, or a SentencePiece .model file."""
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    """Keys (parquet: columns) holding the text; one dataset per key."""
    append_eod: bool = False
    """Append the end-of-document token to each document."""
    add_bos: bool = False
    """Prepend the BOS token to each document."""
    workers: int = 1
    """Worker processes (1 = everything in this process; 0 = one per available core)."""
    split_sentences: bool = False
    """One sequence per sentence (NLTK punkt trained on the corpus)."""
    punkt_params: str | None = None
    """Punkt parameter file: loaded if it exists, else trained parameters are saved there."""
    punkt_train_chars: int = 1_000_000
    """Characters of the corpus used to train punkt (about 4 s per million)."""
    on_error: str = "fail"
    """``fail``: stop at the first bad document; ``skip``: count it by reason and go on."""
    backend: str = "auto"
    """Tokenizer backend: auto, gigatoken, hf, sentencepiece."""
    max_document_bytes: int = readers.DEFAULT_MAX_DOCUMENT_BYTES
    """Larger JSON lines / text files are bad documents (``document_too_large``); 0 = no limit."""
    chunk_bytes: int = readers.DEFAULT_CHUNK_BYTES
    """Uncompressed input bytes per chunk of work."""
    eod_token: str | None = None
    """Override the EOD token string (HF tokenizers; default: eos_token of tokenizer_config)."""
    bos_token: str | None = None
    """Override the BOS token string (HF tokenizers)."""
    progress: bool | None = None
    """Progress bar: True, False, or None = only on a terminal."""
    fail_on_empty: bool = False
    """No document in the inputs is an error (nothing written), not a warning."""

    def dataset_prefix(self, key: str) -> str:
        """Output prefix of the dataset for ``key``."""
        level = "sentence" if self.split_sentences else "document"
        return f"{self.output_prefix}_{key}_{level}"

    @property
    def summary_path(self) -> Path:
        """Where the summary JSON is written."""
        return Path(f"{self.output_prefix}_summary.json")


# ---------------------------------------------------------------------------- worker side


@dataclass
class _WorkerState:
    tokenizer: TextTokenizer
    keys: list[str]
    dtype: type
    splitter: object | None
    append_eod: bool
    add_bos: bool
    max_document_bytes: int


_STATE: _WorkerState | None = None


def _init_worker(
    spec: TokenizerSpec,
    keys: list[str],
    punkt: dict | None,
    append_eod: bool,
    add_bos: bool,
    max_document_bytes: int,
    tokenizer: TextTokenizer | None = None,
) -> None:
    global _STATE
    if tokenizer is None:  # a worker process: one core each, no thread pool per worker
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    splitter = None
    if punkt is not None:
        from megatron_lang.data.sentences import SentenceSplitter, params_from_dict

        splitter = SentenceSplitter(params_from_dict(punkt))
    tok = tokenizer or spec.build()
    _STATE = _WorkerState(
        tok, keys, optimal_dtype(tok.vocab_size), splitter, append_eod, add_bos, max_document_bytes
    )


@dataclass
class ChunkResult:
    """What a worker returns for one chunk."""

    datasets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per key: tokens, lengths, per-doc
    errors: list[readers.DocError]
    documents: int
    input_bytes: int
    text_bytes: int
    blank_lines: int
    peak_rss_mb: float = 0.0  # of the process that made it


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` from ``/proc/self/status`` where available: unlike ``ru_maxrss`` it is not
    inherited across ``fork``/``exec`` from a bigger parent.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _add_specials(
    tokens: np.ndarray, lengths: np.ndarray, per_doc: np.ndarray, bos: int | None, eod: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Insert BOS before each document's first sequence and EOD after its last one."""
    if bos is None and eod is None:
        return tokens, lengths
    n = len(lengths)
    doc_end = np.cumsum(per_doc) - 1  # last sequence of each document
    doc_start = doc_end - per_doc + 1
    new_lengths = lengths.astype(np.int64).copy()
    if bos is not None:
        new_lengths[doc_start] += 1
    if eod is not None:
        new_lengths[doc_end] += 1
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(new_lengths[:-1], out=starts[1:])
    out = np.empty(int(new_lengths.sum()), dtype=tokens.dtype)
    keep = np.ones(len(out), dtype=bool)
    if bos is not None:
        out[starts[doc_start]] = bos
        keep[starts[doc_start]] = False
    if eod is not None:
        pos = starts[doc_end] + new_lengths[doc_end] - 1
        out[pos] = eod
        keep[pos] = False
    out[keep] = tokens
    return out, new_lengths


def process_chunk(chunk: readers.Chunk) -> ChunkResult:
    """Parse, validate, split and tokenize one chunk (in a worker or in-process)."""
    state = _STATE
    assert state is not None, "worker not initialised"
    tok = state.tokenizer
    zero_copy = state.splitter is None and hasattr(tok, "encode_arrow")
    parsed = readers.parse_chunk(chunk, state.keys, state.max_document_bytes, keep_arrow=zero_copy)
    bos = tok.bos_id if state.add_bos else None
    eod = tok.eod_id if state.append_eod else None
    datasets = []
    text_bytes = 0
    n_docs = len(parsed.lines)
    for k in range(len(state.keys)):
        per_doc = np.ones(n_docs, dtype=np.int64)
        if parsed.arrow is not None:  # gigatoken reads pyarrow's buffers, no Python strings
            column = parsed.arrow[k]
            text_bytes += pc.sum(pc.binary_length(column)).as_py() or 0
            tokens, lengths = tok.encode_arrow(column)  # type: ignore[attr-defined]
        else:
            texts = parsed.key_texts(k)
            text_bytes += sum(len(t.encode("utf-8")) for t in texts)
            if state.splitter is not None:
                pieces: list[str] = []
                for d, text in enumerate(texts):
                    sentences = state.splitter.split(text)  # type: ignore[attr-defined]
                    pieces.extend(sentences)
                    per_doc[d] = len(sentences)
                texts = pieces
            tokens, lengths = tok.encode_batch(texts)
        tokens, lengths = _add_specials(tokens, lengths, per_doc, bos, eod)
        datasets.append((tokens.astype(state.dtype), lengths.astype(np.int32), per_doc))
    return ChunkResult(
        datasets,
        parsed.errors,
        n_docs,
        chunk.input_bytes,
        text_bytes,
        parsed.blank_lines,
        peak_rss_mb(),
    )


def _ordered_map(
    fn: Callable, items: Iterable, workers: int, init: Callable, initargs: tuple
) -> Iterator:
    """``map(fn, items)`` over ``workers`` processes, in order, at most 2 x workers in flight."""
    global _STATE
    if workers <= 1:
        init(*initargs)
        try:
            for item in items:
                yield fn(item)
        finally:
            _STATE = None  # do not keep the tokenizer alive after the run
        return
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init, initargs=initargs)
    processes: dict = {}  # every worker started, to name the one that died

    def result(future: Future, item: Any) -> Any:
        try:
            return future.result()
        except BrokenProcessPool as err:
            pool.shutdown(wait=True, cancel_futures=True)  # the others are stopped and joined
            raise PreprocessError(_worker_death(processes.values(), item)) from err

    try:
        window: deque = deque()
        for item in items:
            window.append((pool.submit(fn, item), item))
            processes.update(getattr(pool, "_processes", None) or {})
            if len(window) >= 2 * workers:
                yield result(*window.popleft())
        while window:
            yield result(*window.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _where(chunk: Any) -> str:
    """``FILE:LINE`` of the first document of a chunk."""
    if isinstance(chunk, readers.Chunk):
        if chunk.kind == "text":
            return str(chunk.payload[0][0]) if chunk.payload else "(empty chunk)"
        return f"{chunk.source}:{chunk.first_line}"
    return repr(chunk)


def _worker_death(processes: Iterable[mp.process.BaseProcess], chunk: Any) -> str:
    """Why the pool broke: the exit status of the worker(s) the pool did not stop itself."""
    codes = [p.exitcode for p in processes if p.exitcode is not None]
    died = [c for c in codes if c != -signal.SIGTERM] or codes  # the pool SIGTERMs the rest
    how = []
    for code in sorted(set(died)):
        if code == 0:
            how.append("exited at start-up: its initializer failed, see the log above")
        elif code < 0:
            name = signal.Signals(-code).name
            oom = " (the out-of-memory killer?)" if name == "SIGKILL" else ""
            how.append(f"killed by {name}{oom}")
        else:
            how.append(f"exit code {code}")
    return (
        f"a worker process died ({'; '.join(how) or 'exit status unknown'}) while the chunk "
        f"starting at {_where(chunk)} (or one after it) was being processed; no .bin/.idx "
        "was written. If it ran out of memory, use fewer --workers"
    )


# ---------------------------------------------------------------------------- driver


def _sample_texts(files: list[Path], keys: list[str], max_docs: int, max_chars: int) -> list[str]:
    """The first good documents of the corpus (for tokenizer verification and punkt)."""
    texts: list[str] = []
    seen = 0
    errors: list[readers.DocError] = []
    for record in readers.iter_records(files, keys, errors=errors):
        for text in record.doc.values():
            texts.append(text)
            seen += len(text)
        if len(texts) >= max_docs or seen >= max_chars:
            break
    return texts


def _punkt_params(config: PreprocessConfig, files: list[Path]) -> tuple[dict, str]:
    from megatron_lang.data import sentences

    path = Path(config.punkt_params or f"{config.output_prefix}_punkt.json")
    if config.punkt_params and path.is_file():
        logger.info("punkt parameters loaded from %s", path)
        return sentences.params_to_dict(sentences.load_params(path)), str(path)
    texts = _sample_texts(files, config.json_keys, 10**9, config.punkt_train_chars)
    params = sentences.train_punkt(texts, config.punkt_train_chars)
    sentences.save_params(params, path)
    logger.info("punkt parameters trained on the input and saved to %s", path)
    return sentences.params_to_dict(params), str(path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _progress_bar(config: PreprocessConfig, files: list[Path]):
    from tqdm import tqdm

    compressed = any(str(f).endswith((".gz", ".zst")) for f in files)
    total = None if compressed else sum(f.stat().st_size for f in files)
    disable = None if config.progress is None else not config.progress
    return tqdm(total=total, unit="B", unit_scale=True, desc="preprocess", disable=disable)


def preprocess(config: PreprocessConfig) -> dict:
    """Run the pipeline; returns the summary (also written to ``config.summary_path``).

    Raises:
        PreprocessError: on the first bad document with ``on_error="fail"`` (the message
            names file, line and reason), or when a worker process dies (its exit status
            and the chunk are named); no output ``.bin``/``.idx`` is left behind.
        readers.InputError: an input path that does not exist or is not supported;
            :class:`readers.ContainerError` (also with ``on_error="skip"``) for a corrupt
            or truncated compressed or parquet file.
    """
    if config.on_error not in ON_ERROR:
        raise PreprocessError(f"--on-error must be one of {ON_ERROR}, not {config.on_error!r}")
    if not config.json_keys or len(set(config.json_keys)) != len(config.json_keys):
        raise PreprocessError(f"--json-keys must be distinct and non-empty: {config.json_keys}")
    workers = config.workers if config.workers > 0 else default_workers()
    start, cpu_start = time.time(), cpu_seconds()
    files = readers.expand_inputs(config.inputs)
    sample = _sample_texts(files, config.json_keys, 64, 1_000_000)
    tok, spec, reason = load_tokenizer(
        config.tokenizer, config.backend, sample, config.eod_token, config.bos_token
    )
    logger.info("tokenizer %s: backend %s (%s)", config.tokenizer, spec.backend, reason)
    if config.append_eod and tok.eod_id is None:
        raise PreprocessError(f"--append-eod: tokenizer {config.tokenizer} has no EOD token")
    if config.add_bos and tok.bos_id is None:
        raise PreprocessError(f"--add-bos: tokenizer {config.tokenizer} has no BOS token")
    Path(config.output_prefix).parent.mkdir(parents=True, exist_ok=True)
    punkt, punkt_path = (None, None)
    if config.split_sentences:
        punkt, punkt_path = _punkt_params(config, files)
    dtype = optimal_dtype(tok.vocab_size)

    skipped: Counter = Counter()
    examples: list[str] = []
    totals = Counter()
    status, error = "ok", None
    chunks = readers.iter_chunks(
        files, config.json_keys, config.chunk_bytes, config.max_document_bytes
    )
    initargs = (
        spec,
        config.json_keys,
        punkt,
        config.append_eod,
        config.add_bos,
        config.max_document_bytes,
        tok if workers <= 1 else None,
    )
    writers = {}
    worker_rss = 0.0
    setup_seconds = 0.0
    try:
        with ExitStack() as stack, _progress_bar(config, files) as bar:
            for key in config.json_keys:
                writer = IndexedDatasetWriter(config.dataset_prefix(key), dtype)
                writers[key] = stack.enter_context(writer)
            setup_seconds = time.time() - start
            # closed (workers stopped) before the writers remove their temporaries
            results = stack.enter_context(
                closing(_ordered_map(process_chunk, chunks, workers, _init_worker, initargs))
            )
            for result in results:
                if result.errors:
                    if config.on_error == "fail":
                        raise PreprocessError(str(result.errors[0]))
                    for err in result.errors:
                        skipped[err.reason] += 1
                        if len(examples) < 20:
                            examples.append(str(err))
                for key, (tokens, lengths, per_doc) in zip(config.json_keys, result.datasets):
                    writers[key].add_documents(tokens, lengths, per_doc)
                    totals["tokens"] += len(tokens)
                totals["documents"] += result.documents
                totals["input_bytes"] += result.input_bytes
                totals["text_bytes"] += result.text_bytes
                totals["blank_lines"] += result.blank_lines
                if workers > 1:
                    worker_rss = max(worker_rss, result.peak_rss_mb)
                bar.update(result.input_bytes)
                elapsed = max(time.time() - start, 1e-9)
                bar.set_postfix(
                    docs_s=f"{totals['documents'] / elapsed:.0f}",
                    tok_s=f"{totals['tokens'] / elapsed / 1e6:.2f}M",
                    refresh=False,
                )
            if totals["documents"] == 0:
                _no_documents(config, files, skipped)
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        seconds = time.time() - start
        summary = {
            "status": status,
            "error": error,
            "inputs": [str(f) for f in files],
            "outputs": {
                key: {
                    "prefix": config.dataset_prefix(key),
                    "documents": w.documents,
                    "sequences": w.sequences,
                    "tokens": w.tokens,
                }
                for key, w in writers.items()
            }
            if status == "ok"
            else {},
            "documents": totals["documents"],
            "tokens": totals["tokens"],
            "input_bytes": totals["input_bytes"],
            "text_bytes": totals["text_bytes"],
            "skipped": {r: skipped.get(r, 0) for r in readers.REASONS},
            "skipped_total": sum(skipped.values()),
            "skipped_examples": examples,
            "blank_lines": totals["blank_lines"],
            **tok.describe(),
            "backend_reason": reason,
            "dtype": np.dtype(dtype).name,
            "punkt_params": punkt_path,
            "workers": workers,
            "seconds": round(seconds, 3),
            "setup_seconds": round(setup_seconds, 3),
            "cpu_seconds": round(cpu_seconds() - cpu_start, 3),
            "tokens_per_second_after_setup": round(
                totals["tokens"] / max(seconds - setup_seconds, 1e-9), 1
            ),
            "documents_per_second": round(totals["documents"] / max(seconds, 1e-9), 1),
            "tokens_per_second": round(totals["tokens"] / max(seconds, 1e-9), 1),
            "mb_per_second": round(totals["input_bytes"] / 1e6 / max(seconds, 1e-9), 3),
            "peak_rss_mb": {
                "main": round(peak_rss_mb(), 1),
                "largest_worker": round(worker_rss, 1),
            },
            "config": asdict(config),
        }
        _write_json(config.summary_path, summary)
    logger.info(
        "%d documents, %d tokens, %d skipped in %.1f s (%.2f M tokens/s); summary in %s",
        summary["documents"],
        summary["tokens"],
        summary["skipped_total"],
        seconds,
        summary["tokens_per_second"] / 1e6,
        config.summary_path,
    )
    return summary


def _no_documents(config: PreprocessConfig, files: list, skipped: Counter) -> None:
    """Say loudly that the inputs hold no document; raise with ``fail_on_empty``."""
    why = (
        f"all {sum(skipped.values())} were bad and skipped"
        if skipped
        else f"the files are empty or hold no text under --json-keys {config.json_keys}"
    )
    names = ", ".join(str(f) for f in files[:5]) + (" ..." if len(files) > 5 else "")
    message = f"no documents in {len(files)} input file(s) ({names}): {why}"
    if config.fail_on_empty:
        raise PreprocessError(f"{message}; nothing written (--fail-on-empty)")
    logger.warning("%s; the dataset %s* is EMPTY", message, config.output_prefix)


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
