"""Chat JSONL → packed, loss-masked Megatron indexed datasets (one output folder).

Pipeline: the main process cuts the inputs into blocks of whole lines; worker processes
parse, normalise (:mod:`.formats`), render with the chat template and tokenise
(:mod:`.render`) each block; the main process collects the conversations in input order
into a temporary unpacked dataset, packs them (:mod:`.packing`), and writes the folder:

``OUT/chat.bin``, ``OUT/chat.idx``
    token ids; each conversation is one *sequence*, each packed sample one *document*
    (``document_indices`` mark the samples), so megatron-core's ``IndexedDataset`` reads
    a sample as ``get(document)`` and its conversations from the sequence lengths.
``OUT/chat_lossmask.bin``, ``OUT/chat_lossmask.idx``
    the per-token loss mask (uint8, 1 = the token is a trained target), the same layout.
``OUT/report.json``
    what was read, kept, dropped and why, trained tokens, packing efficiency, template,
    loss mode, tokenizer, sequence length, speed.

The folder appears only when complete (written under a temporary name and renamed).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import tempfile
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from megatron_lang.data import readers
from megatron_lang.data.chat.formats import FORMATS, ChatRecordError, Message, normalise
from megatron_lang.data.chat.packing import pack_best_fit, packing_efficiency
from megatron_lang.data.chat.render import (
    LOSS_MODES,
    ChatRenderer,
    TemplateError,
    resolve_template,
)
from megatron_lang.data.chat.tokens import (
    BACKENDS,
    VERIFICATION_CONTENTS,
    ByteLevelEncoder,
    same_encoding,
)
from megatron_lang.data.indexed import IndexedDatasetWriter, optimal_dtype, read_index
from megatron_lang.data.preprocess import PreprocessError, _ordered_map, _worker_death
from megatron_lang.platform.files import atomic_output_dir

logger = logging.getLogger(__name__)

TOKENS_NAME = "chat"
MASK_NAME = "chat_lossmask"
REPORT_NAME = "report.json"
OVERLONG = ("drop", "truncate")
ON_ERROR = ("fail", "skip")
_BLOCK_BYTES = 1 << 20


@dataclass
class ChatDataConfig:
    """One run of the chat data tool (the CLI's options)."""

    inputs: list[str]
    output: str
    tokenizer: str
    seq_length: int = 4096
    template: str = "auto"
    loss_mode: str = "assistant"
    format: str = "auto"
    overlong: str = "drop"
    on_error: str = "fail"
    workers: int = 1
    exact_render: bool = False
    backend: str = "auto"
    overwrite: bool = False
    max_listed_errors: int = 20

    def check(self) -> None:
        for name, value, allowed in (
            ("loss_mode", self.loss_mode, LOSS_MODES),
            ("format", self.format, FORMATS),
            ("overlong", self.overlong, OVERLONG),
            ("on_error", self.on_error, ON_ERROR),
            ("backend", self.backend, BACKENDS),
        ):
            if value not in allowed:
                raise PreprocessError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if self.seq_length < 2:
            raise PreprocessError(f"seq_length={self.seq_length}: must be at least 2")
        if self.workers < 1:
            raise PreprocessError(f"workers={self.workers}: must be at least 1")


@dataclass
class BlockResult:
    """What a worker returns for one block of lines."""

    source: str
    lines: np.ndarray  # line number of each kept conversation
    ids: np.ndarray  # all token ids, concatenated, in the dataset's dtype
    mask: np.ndarray  # uint8, same length
    lengths: np.ndarray  # tokens per conversation
    errors: list[tuple[str, int, str, str]] = field(default_factory=list)
    straddling: int = 0
    turn_ends: Counter = field(default_factory=Counter)
    fallbacks: int = 0  # conversations the fast encoder handed to HF


_STATE: dict = {}


def load_chat_tokenizer(path: str, cls: tuple[str, str] | None = None):
    """A transformers fast tokenizer from a local folder (never the hub).

    ``cls`` (module, class name), as the main process's ``AutoTokenizer`` resolved it, lets
    worker processes load the same class directly: ``AutoTokenizer`` imports torch.
    """
    if cls is not None:
        import importlib

        tokenizer_class = getattr(importlib.import_module(cls[0]), cls[1])
        return tokenizer_class.from_pretrained(path, local_files_only=True)
    from transformers import AutoTokenizer

    if not Path(path).exists():
        raise PreprocessError(f"tokenizer {path}: no such file or folder")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise PreprocessError(f"tokenizer {path}: cannot load: {err}") from err


def _init_worker(config: ChatDataConfig, tokenizer_class: tuple[str, str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = _STATE.pop("tokenizer", None) or load_chat_tokenizer(
        config.tokenizer, tokenizer_class
    )
    template = resolve_template(tokenizer, config.template)
    fast = _STATE.pop("fast", None)
    if fast is None and config.backend == "gigatoken":  # chosen (and verified) by the main process
        fast = ByteLevelEncoder(tokenizer.backend_tokenizer)
    _STATE["renderer"] = ChatRenderer(
        tokenizer, template, config.loss_mode, exact=config.exact_render, fast=fast
    )
    _STATE["config"] = config
    _STATE["dtype"] = optimal_dtype(len(tokenizer))  # what the writer casts to


SAMPLE_CONVERSATIONS = 256  # conversations from the input in the verification sample


def choose_backend(
    tokenizer, template, config: ChatDataConfig, files: list[Path]
) -> tuple[ByteLevelEncoder | None, str]:
    """The fast encoder (gigatoken, byte offsets) when it loads and gives exactly HF's ids,
    masks, straddling counts and end-of-turn ids on the verification sample (fixed
    conversations plus the first ones of the input); else None (HF). Returns the reason.

    Raises:
        PreprocessError: ``backend="gigatoken"`` and the fast encoder cannot be used.
    """
    if config.backend == "hf":
        return None, "hf requested"
    try:
        fast = ByteLevelEncoder(tokenizer.backend_tokenizer)
    except Exception as err:  # not byte-level BPE, or gigatoken refuses it
        first_line = (str(err).strip().splitlines() or [""])[0]
        fast, problem = None, f"gigatoken cannot be used: {type(err).__name__}: {first_line}"
    else:
        reference = ChatRenderer(tokenizer, template, config.loss_mode, exact=config.exact_render)
        fixed = [[Message("user", u), Message("assistant", a)] for u, a in VERIFICATION_CONTENTS]
        added = [t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()]
        if added:  # every added token inside text, as a user may write it
            fixed.append([Message("user", "x".join(added)), Message("assistant", " ".join(added))])
        rendered = [reference.render(m) for m in fixed]
        for chunk in _blocks(files[:1]):
            rendered += _parse(chunk, reference, config, limit=SAMPLE_CONVERSATIONS)[2]
            break
        candidate = ChatRenderer(tokenizer, template, config.loss_mode, fast=fast)
        problem = same_encoding(candidate.encode_flat(rendered), reference.encode_flat(rendered))
        if problem is not None:
            problem = f"gigatoken differs from HF on the verification sample: {problem}"
    if problem is None:
        return fast, (
            f"gigatoken matched HF ids and masks on {len(rendered)} verification conversations"
        )
    if config.backend == "gigatoken":
        raise PreprocessError(f"--backend gigatoken: {problem}")
    logger.info("tokenizer %s: %s; using hf", config.tokenizer, problem)
    return None, f"{problem}; using hf"


def _parse(chunk: readers.Chunk, renderer: ChatRenderer, config: ChatDataConfig, limit=None):
    """Parse, validate and render the lines of a block: (errors, line numbers, renders)."""
    errors = []
    lines, rendered = [], []
    for line_no, size in chunk.oversized.items():
        errors.append((chunk.source, line_no, "line too long", f"{size} bytes"))
    raw_lines = chunk.payload.split(b"\n") if chunk.payload != b"\n" else []
    oversized = chunk.oversized
    first = chunk.first_line
    for k, raw in enumerate(raw_lines):
        line_no = first + k
        if not raw.strip() or (oversized and line_no in oversized):
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            errors.append((chunk.source, line_no, "invalid JSON", str(err)))
            continue
        try:
            messages = normalise(record, config.format)
        except ChatRecordError as err:
            errors.append((chunk.source, line_no, err.reason, err.detail))
            continue
        rendered.append(renderer.render(messages))
        lines.append(line_no)
        if limit is not None and len(rendered) >= limit:
            break
    return errors, lines, rendered


def process_block(chunk: readers.Chunk) -> BlockResult:
    """Parse, validate, render and tokenise one block of JSONL lines."""
    renderer: ChatRenderer = _STATE["renderer"]
    config: ChatDataConfig = _STATE["config"]
    errors, lines, rendered = _parse(chunk, renderer, config)
    lines = np.asarray(lines, dtype=np.int64)
    if not rendered:
        return BlockResult(chunk.source, lines, np.zeros(0, np.int64), np.zeros(0, np.uint8),
                           np.zeros(0, np.int64), errors)  # fmt: skip
    before = renderer.fallbacks
    flat = renderer.encode_flat(rendered)
    fallbacks = renderer.fallbacks - before
    lengths = flat.lengths
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    csum = np.zeros(len(flat.mask) + 1, dtype=np.int64)
    np.cumsum(flat.mask, out=csum[1:])
    trained = csum[offsets[1:]] - csum[offsets[:-1]]
    if config.loss_mode != "full":
        every = np.flatnonzero((trained == lengths) & (lengths > 0))
        if len(every):
            raise TemplateError(
                f"{chunk.source}:{lines[every[0]]}: every token of the conversation would be "
                f"trained in loss mode {config.loss_mode!r}: the template does not separate "
                f"prompts from answers"
            )
    keep = trained > 0
    for i in np.flatnonzero(~keep):
        errors.append(
            (chunk.source, int(lines[i]), "no trainable token", "the loss mask is all zeros")
        )
    if keep.all():
        ids, mask, straddling = flat.ids, flat.mask, int(flat.straddling.sum())
        turn_ids = flat.turn_end_ids
    else:
        per_token = np.repeat(keep, lengths)
        ids, mask = flat.ids[per_token], flat.mask[per_token]
        lines, lengths = lines[keep], lengths[keep]
        straddling = int(flat.straddling[keep].sum())
        turn_ids = flat.turn_end_ids[keep[flat.span_conv]]
    values, first, counts = np.unique(
        turn_ids[turn_ids >= 0], return_index=True, return_counts=True
    )
    order = np.argsort(first, kind="stable")  # first appearance, as Counter.update counts
    turn_ends = Counter(dict(zip(values[order].tolist(), counts[order].tolist())))
    ids = ids.astype(_STATE["dtype"])  # 4x less to send back for a vocabulary < 65,500
    return BlockResult(
        chunk.source, lines, ids, mask, lengths, errors, straddling, turn_ends, fallbacks
    )


def _map_blocks(blocks, workers: int, initargs: tuple):
    """``process_block`` over ``blocks``, results in input order.

    With ``workers > 1`` the main process, which already holds a renderer, processes the
    blocks itself until a worker has started (about a second: it loads the tokenizer),
    and afterwards the next block whenever the oldest block sent to a worker is not back
    yet; at most ``16 x workers`` results (about 3 MB each) wait in memory.  A block's
    result does not depend on the process, so the files do not either.
    """
    if workers <= 1:
        yield from _ordered_map(process_block, blocks, 1, _init_worker, initargs)
        return
    _init_worker(*initargs)
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=initargs)
    processes: dict = {}  # every worker started, to name the one that died
    window: deque = deque()  # (future, block) or (None, result)
    blocks = iter(blocks)
    try:
        started = [pool.submit(os.getpid) for _ in range(workers)]  # done once a worker is up
        processes.update(getattr(pool, "_processes", None) or {})
        block = next(blocks, None)
        while block is not None or window:
            if not any(f.done() for f in started):
                yield process_block(block)  # window is empty until a worker is up
                block = next(blocks, None)
                continue
            busy = sum(1 for f, _ in window if f is not None and not f.done())
            while block is not None and busy < 2 * workers:
                window.append((pool.submit(process_block, block), block))
                processes.update(getattr(pool, "_processes", None) or {})
                busy += 1
                block = next(blocks, None)
            future, value = window[0]
            if future is not None and not future.done() and block is not None:
                if len(window) < 16 * workers:
                    window.append((None, process_block(block)))
                    block = next(blocks, None)
                    continue
            window.popleft()
            yield value if future is None else future.result()
    except BrokenProcessPool as err:
        pool.shutdown(wait=True, cancel_futures=True)
        at = next((b for f, b in window if f is not None), block)
        raise PreprocessError(_worker_death(processes.values(), at)) from err
    finally:
        _STATE.clear()
        pool.shutdown(wait=True, cancel_futures=True)


def _blocks(files: list[Path]):
    for path in files:
        yield from readers._jsonl_chunks(path, _BLOCK_BYTES, 64 << 20)


def _input_files(inputs: list[str]) -> list[Path]:
    files = readers.expand_inputs(inputs)
    bad = [f for f in files if not f.name.lower().endswith(readers.JSONL_SUFFIXES)]
    if bad:
        raise PreprocessError(
            f"{bad[0]}: chat data must be JSONL ({', '.join(readers.JSONL_SUFFIXES)})"
        )
    return files


def build_chat_dataset(config: ChatDataConfig, progress: bool | None = None) -> dict:
    """Run the tool; returns the report (also written to ``OUT/report.json``).

    Raises:
        PreprocessError: bad options, an unreadable input, a bad record with
            ``on_error="fail"``, or no conversation left; nothing is written then.
        TemplateError: a template that cannot give a correct loss mask.
    """
    from tqdm import tqdm

    config.check()
    files = _input_files(config.inputs)
    # Fail early, in this process, on the tokenizer and template.
    tokenizer = load_chat_tokenizer(config.tokenizer)
    template = resolve_template(tokenizer, config.template)
    probe = ChatRenderer(tokenizer, template, "assistant")
    probe.render([Message("user", "?"), Message("assistant", "!")])  # refuses a bad template
    end_of_turn = probe.end_of_turn_id
    fast, backend_reason = choose_backend(tokenizer, template, config, files)
    worker_config = replace(config, backend="hf" if fast is None else "gigatoken")
    _STATE["tokenizer"] = tokenizer  # the main process's renderer uses them
    _STATE["fast"] = fast
    start = time.perf_counter()
    dtype = optimal_dtype(len(tokenizer))
    errors: Counter = Counter()
    listed: list[str] = []
    total_bytes = sum(f.stat().st_size for f in files)
    compressed = any(f.name.endswith((".gz", ".zst")) for f in files)
    bar = tqdm(
        total=None if compressed else total_bytes,
        unit="B",
        unit_scale=True,
        desc="chat data",
        disable=None if progress is None else not progress,
    )
    with tempfile.TemporaryDirectory(prefix=".chat-", dir=Path(config.output).parent) as scratch:
        raw_prefix = Path(scratch) / "unpacked"
        mask_prefix = Path(scratch) / "unpacked_mask"
        where: list[tuple[str, np.ndarray]] = []
        all_lengths: list[np.ndarray] = []
        straddling = 0
        fallbacks = 0
        turn_ends: Counter = Counter()
        with (
            IndexedDatasetWriter(raw_prefix, dtype) as tok_writer,
            IndexedDatasetWriter(mask_prefix, np.uint8) as mask_writer,
        ):
            tokenizer_class = (type(tokenizer).__module__, type(tokenizer).__qualname__)
            results = _map_blocks(_blocks(files), config.workers, (worker_config, tokenizer_class))
            for chunk_result in results:
                bar.update(0)
                for source, line_no, reason, detail in chunk_result.errors:
                    message = f"{source}:{line_no}: {reason}: {detail}"
                    if config.on_error == "fail":
                        raise PreprocessError(
                            f"{message} (nothing written; --on-error skip counts and skips "
                            f"such records)"
                        )
                    errors[reason] += 1
                    if len(listed) < config.max_listed_errors:
                        listed.append(message)
                n = len(chunk_result.lengths)
                if n:
                    ones = np.ones(n, dtype=np.int64)
                    tok_writer.add_documents(chunk_result.ids, chunk_result.lengths, ones)
                    mask_writer.add_documents(chunk_result.mask, chunk_result.lengths, ones)
                    where.append((chunk_result.source, chunk_result.lines))
                    all_lengths.append(chunk_result.lengths)
                straddling += chunk_result.straddling
                fallbacks += chunk_result.fallbacks
                turn_ends.update(chunk_result.turn_ends)
        bar.close()
        tokenised_s = time.perf_counter() - start
        lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, np.int64)
        if not len(lengths):
            raise PreprocessError(
                f"no usable conversation in {len(files)} input file(s) "
                f"({sum(errors.values())} skipped: {dict(errors)}); nothing written"
            )
        report = _pack_and_write(
            config, raw_prefix, mask_prefix, lengths, where, errors, listed, template
        )
    elapsed = time.perf_counter() - start
    total_tokens = int(lengths.sum())
    report["speed"] = {
        "workers": config.workers,
        "tokenise_s": round(tokenised_s, 3),
        "total_s": round(elapsed, 3),
        "conversations_per_s": round(len(lengths) / tokenised_s, 1),
        "tokens_per_s": round(total_tokens / tokenised_s, 1),
    }
    report["end_of_turn"] = {
        "id": end_of_turn,
        "token": tokenizer.convert_ids_to_tokens(end_of_turn),
    }
    report["backend"] = {
        "name": worker_config.backend,
        "reason": backend_reason,
        "conversations_on_hf": fallbacks if fast is not None else None,
    }
    report["straddling_tokens"] = straddling
    report["last_trained_token_counts"] = {str(k): v for k, v in turn_ends.most_common()}
    # The report inside the folder was written by _pack_and_write; add the speed figures.
    path = Path(config.output) / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if straddling:
        logger.warning(
            "%d token(s) begin in a prompt and end inside an answer: they are not trained "
            "(a tokenizer merging across the template's boundary)",
            straddling,
        )
    return report


def _pack_and_write(
    config: ChatDataConfig,
    raw_prefix: Path,
    mask_prefix: Path,
    lengths: np.ndarray,
    where: list,
    errors: Counter,
    listed: list[str],
    template,
) -> dict:
    """Drop or truncate what does not fit, pack, and write the output folder."""
    cap = config.seq_length
    index = read_index(raw_prefix)
    tokens = np.memmap(f"{raw_prefix}.bin", dtype=index.dtype, mode="r")
    masks = np.memmap(f"{mask_prefix}.bin", dtype=np.uint8, mode="r")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    over = lengths > cap
    kept_len = lengths.copy()
    dropped_overlong = 0
    truncated = 0
    keep = np.ones(len(lengths), dtype=bool)
    if over.any():
        if config.overlong == "drop":
            keep &= ~over
            dropped_overlong = int(over.sum())
        else:
            for i in np.flatnonzero(over):
                if masks[starts[i] : starts[i] + cap].any():
                    kept_len[i] = cap
                    truncated += 1
                else:
                    keep[i] = False
                    dropped_overlong += 1
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise PreprocessError(
            f"every conversation is longer than seq_length={cap} tokens; nothing written"
        )
    if dropped_overlong or truncated:
        logger.warning(
            "%d conversation(s) longer than seq_length=%d tokens: %d dropped, %d truncated "
            "(--overlong %s; listed by count in report.json)",
            int(over.sum()),
            cap,
            dropped_overlong,
            truncated,
            config.overlong,
        )
    bins = pack_best_fit(kept_len[kept], cap)
    out_dir = Path(config.output)
    trained = 0
    with atomic_output_dir(out_dir, overwrite=config.overwrite, error=PreprocessError) as tmp:
        with (
            IndexedDatasetWriter(tmp / TOKENS_NAME, index.dtype.type) as tok_writer,
            IndexedDatasetWriter(tmp / MASK_NAME, np.uint8) as mask_writer,
        ):
            for members in bins:
                rows = kept[members]
                parts_t = [tokens[starts[i] : starts[i] + kept_len[i]] for i in rows]
                parts_m = [masks[starts[i] : starts[i] + kept_len[i]] for i in rows]
                seq_lengths = kept_len[rows]
                mask = np.concatenate(parts_m)
                trained += int(mask.sum())
                per_doc = np.array([len(rows)], dtype=np.int64)
                tok_writer.add_documents(np.concatenate(parts_t), seq_lengths, per_doc)
                mask_writer.add_documents(mask, seq_lengths, per_doc)
        total = int(kept_len[kept].sum())
        report = {
            "output": str(out_dir),
            "inputs": [str(p) for p in config.inputs],
            "config": asdict(config),
            "template": {"name": template.name, "sha256": template.sha256, "jinja": template.jinja},
            "conversations": {
                "read": int(len(lengths)) + int(sum(errors.values())),
                "kept": int(len(kept)),
                "skipped_bad_records": int(sum(errors.values())),
                "dropped_overlong": dropped_overlong,
                "truncated": truncated,
            },
            "skipped_by_reason": dict(errors),
            "skipped_examples": listed,
            "tokens": {"total": total, "trained": trained},
            "packing": {
                "samples": len(bins),
                "seq_length": cap,
                "efficiency": round(packing_efficiency(kept_len[kept], len(bins), cap), 5),
            },
            "loss_mode": config.loss_mode,
            "tokenizer": config.tokenizer,
            "label_convention": (
                "mask[t] = 1: token t is a trained target (predicted from tokens < t of its "
                "own conversation)"
            ),
        }
        (tmp / REPORT_NAME).write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    del tokens, masks
    return report
