"""Perplexity of HF and Megatron models on held-out text, per token and per word.

How a document is scored (the same for every model and tokenizer):

* The text is tokenized with the model's own tokenizer **without** special
  tokens, giving ``x_1 .. x_n``.  One *prefix* token ``x_0`` is put in front:
  the tokenizer's BOS token, or its EOS / end-of-document token when it has no
  BOS (the separator a pretrained model has seen before every document), or the
  token named by ``prefix_token``.  Every text token ``x_1 .. x_n`` is scored,
  the first one conditioned on the prefix only, and the prefix itself is never
  scored.  The total NLL is therefore ``-ln P(x_1 .. x_n | x_0)``: it covers the
  whole text under every tokenizer, so per-word and per-byte figures of models
  with different tokenizers describe the same text.
* Long documents are cut into windows of at most ``seq_length`` input tokens
  over the stream ``x_0 .. x_n`` (see :func:`plan_windows`).  Without ``stride``
  the windows do not overlap (each window's first prediction sees one token of
  context); with ``stride = T`` consecutive windows start ``T`` tokens apart and
  each later window scores only the targets the previous window did not reach,
  so every target is scored exactly once with at least ``seq_length - T + 1``
  tokens of context.
* Words are counted on the text by :func:`count_words` (whitespace split), bytes
  as UTF-8 bytes, characters as code points.  They do not depend on the
  tokenizer.  For Megatron ``.bin``/``.idx`` data the ids are scored as stored
  (a leading BOS and a trailing EOD are stripped, the prefix is added as above)
  and words/bytes are counted on the text the tokenizer decodes them to.

Figures: ``loss_per_token = NLL / tokens`` (nats), ``perplexity = exp`` of it,
``loss_per_word = NLL / words``, ``bits_per_word = NLL / ln 2 / words``,
``bits_per_byte = NLL / ln 2 / bytes``.  Models run in fp32 (CPU or the current
CUDA device); Megatron checkpoints are built at TP=1/PP=1 in this process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from megatron_lang.analysis.eval_data import (
    DataSpec,
    Document,
    EvaluationError,
    count_words,
    documents_from_indexed,
    documents_from_texts,
    is_indexed_prefix,
    load_data,
    read_texts,
)
from megatron_lang.analysis.perplexity_report import (
    REPORT_FORMAT,
    EvalResult,
    PerplexityReport,
    ReportRow,
)
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

DEFAULT_SEQ_LENGTH = 1024
DEFAULT_BATCH_SIZE = 4

__all__ = [
    "REPORT_FORMAT",
    "DataSpec",
    "Document",
    "EvalResult",
    "EvaluationError",
    "LoadedModel",
    "PerplexityReport",
    "ReportRow",
    "Window",
    "count_words",
    "documents_from_indexed",
    "documents_from_texts",
    "evaluate_models",
    "evaluate_texts",
    "is_indexed_prefix",
    "load_data",
    "open_model",
    "plan_windows",
    "read_texts",
    "resolve_model_path",
    "score_documents",
]


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One model input over the stream ``x_0 .. x_n`` (``x_0`` is the prefix token).

    The inputs are ``x[start:end]``; they predict ``x[start + 1 : end + 1]``, of which
    the targets ``x[first : end + 1]`` are scored here.
    """

    start: int
    end: int
    first: int


def plan_windows(num_targets: int, seq_length: int, stride: int | None = None) -> list[Window]:
    """Windows that score each of the targets ``1 .. num_targets`` exactly once.

    Window ``w`` starts at ``w * stride`` and ends at ``min(start + seq_length, n)``;
    it scores the targets after the previous window's end.  ``stride=None`` means
    ``stride = seq_length`` (non-overlapping windows).

    Raises:
        EvaluationError: ``seq_length < 1`` or ``stride`` outside ``1 .. seq_length``.
    """
    if seq_length < 1:
        raise EvaluationError(f"seq_length must be >= 1, got {seq_length}")
    stride = seq_length if stride is None else stride
    if not 1 <= stride <= seq_length:
        raise EvaluationError(f"stride must be in 1 .. seq_length={seq_length}, got {stride}")
    windows: list[Window] = []
    scored_to = 0
    start = 0
    while scored_to < num_targets:
        end = min(start + seq_length, num_targets)
        windows.append(Window(start, end, scored_to + 1))
        scored_to = end
        start += stride
    return windows


# ----------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """A model opened by :func:`open_model`, with its tokenizer."""

    name: str
    path: Path
    kind: str
    """``"hf"`` or ``"megatron"``."""
    tokenizer: Any
    """A ``transformers`` tokenizer."""
    vocab_size: int
    """Logit columns the model produces (padding columns excluded)."""
    max_positions: int | None
    module: Any

    @torch.no_grad()
    def logits(self, input_ids_BS: torch.Tensor) -> torch.Tensor:
        """fp32 logits ``[B, S, V]`` of the model (causal; right padding does not matter)."""
        if self.kind == "megatron":
            from megatron_lang.conversion.megatron_model import forward_logits

            return forward_logits(self.module, input_ids_BS.to(_device()), self.vocab_size)
        out = self.module(input_ids=input_ids_BS.to(self.module.device), use_cache=False)
        return out.logits.float()

    def prefix_id(self, prefix_token: str | None = None) -> tuple[int, str]:
        """Id and string of the prefix token (see the module docstring).

        Raises:
            EvaluationError: the tokenizer has none of BOS/EOS, or ``prefix_token`` is unknown.
        """
        tok = self.tokenizer
        if prefix_token is not None:
            tid = tok.convert_tokens_to_ids(prefix_token)
            if tid is None or (tid == tok.unk_token_id and prefix_token != tok.unk_token):
                raise EvaluationError(
                    f"prefix token {prefix_token!r} is not in {self.name}'s vocabulary"
                )
            return int(tid), prefix_token
        for attr in ("bos_token", "eos_token"):
            token = getattr(tok, attr, None)
            if token is not None:
                return int(tok.convert_tokens_to_ids(token)), str(token)
        raise EvaluationError(
            f"tokenizer of {self.name} has neither a BOS nor an EOS token; pass prefix_token"
        )


def _device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def resolve_model_path(path: str | os.PathLike) -> tuple[Path, str]:
    """``(directory or file, kind)`` for an HF directory / GGUF file or a Megatron checkpoint.

    A run folder with a ``latest`` pointer resolves to the checkpoint it names.

    Raises:
        EvaluationError: the path does not exist or is neither kind of model.
    """
    from megatron_lang.checkpointing.checkpoint import LATEST, latest_checkpoint
    from megatron_lang.checkpointing.metadata import METADATA_FILE

    p = Path(path)
    if not p.exists():
        raise EvaluationError(f"model {p} does not exist")
    if p.is_file() and p.suffix == ".gguf":
        return p, "hf"
    if p.is_dir() and (p / LATEST).is_file():
        try:
            resolved = latest_checkpoint(p)
        except FileNotFoundError as err:
            raise EvaluationError(f"model {p}: {err}") from err
        assert resolved is not None
        p = resolved
    if p.is_dir() and (p / METADATA_FILE).is_file():
        return p, "megatron"
    if p.is_dir() and (p / "config.json").is_file():
        return p, "hf"
    raise EvaluationError(
        f"model {p} is not an HF model directory (config.json), a .gguf file, "
        f"a megatron_lang checkpoint ({METADATA_FILE}) or a run folder with '{LATEST}'"
    )


def _load_tokenizer(path: Path, name: str, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        return (
            AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
            if gguf_file
            else AutoTokenizer.from_pretrained(path)
        )
    except Exception as err:  # transformers raises many kinds for a missing/broken tokenizer
        raise EvaluationError(f"cannot load the tokenizer of {name} from {path}: {err}") from err


@contextlib.contextmanager
def open_model(
    path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, name: str | None = None
) -> Iterator[LoadedModel]:
    """Load a model for evaluation (fp32, eval mode) and its tokenizer.

    Args:
        path: HF directory, ``.gguf`` file, Megatron checkpoint (converter output or a
            trainer ``iter_N``) or a run folder with ``latest``.
        tokenizer: tokenizer directory to use instead of the model's own (a Megatron
            checkpoint saved without ``tokenizer/`` needs one).
        name: label in reports (default: the path's name).

    Yields:
        The model; a Megatron model's one-process group is torn down on exit.

    Raises:
        EvaluationError: unknown model directory or no tokenizer.
    """
    resolved, kind = resolve_model_path(path)
    label = name or Path(path).name
    if kind == "hf":
        from transformers import AutoModelForCausalLM

        gguf = resolved.name if resolved.suffix == ".gguf" else None
        root = resolved.parent if gguf else resolved
        tok = _load_tokenizer(
            Path(tokenizer) if tokenizer else root, label, None if tokenizer else gguf
        )
        kwargs = {"gguf_file": gguf} if gguf else {}
        module = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32, **kwargs)
        module.to(_device()).eval()
        cfg = module.config
        yield LoadedModel(
            label,
            resolved,
            kind,
            tok,
            int(cfg.vocab_size),
            getattr(cfg, "max_position_embeddings", None),
            module,
        )
        return

    from megatron_lang.checkpointing.metadata import tokenizer_path
    from megatron_lang.conversion.megatron_model import single_process_model

    tok_dir = Path(tokenizer) if tokenizer else tokenizer_path(resolved)
    if tok_dir is None:
        raise EvaluationError(f"checkpoint {resolved} has no tokenizer/ folder; pass a tokenizer")
    tok = _load_tokenizer(tok_dir, label)
    with single_process_model(resolved, torch.float32) as (module, meta):
        a = meta.arch
        yield LoadedModel(
            label, resolved, kind, tok, a.vocab_size, a.max_position_embeddings, module
        )


# ----------------------------------------------------------------------------- scoring


def score_documents(
    model: LoadedModel,
    docs: Sequence[Document],
    seq_length: int = DEFAULT_SEQ_LENGTH,
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prefix_token: str | None = None,
    progress: bool = False,
    desc: str = "",
) -> EvalResult:
    """Sum the NLL of every token of ``docs`` under ``model`` (windows batched).

    Raises:
        EvaluationError: bad ``seq_length``/``stride``/``batch_size``, no prefix token, or
            token ids outside the model's vocabulary.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if model.max_positions and seq_length > model.max_positions:
        log.warning(
            "%s: seq_length %d exceeds the model's %d positions",
            model.name,
            seq_length,
            model.max_positions,
        )
    prefix, _ = model.prefix_id(prefix_token)
    top = max([prefix, *(max(d.ids) for d in docs if d.ids)])
    if top >= model.vocab_size:
        raise EvaluationError(
            f"token id {top} of {model.name}'s tokenizer is outside the model's vocabulary "
            f"({model.vocab_size}); is it the model's own tokenizer?"
        )
    streams = [[prefix, *doc.ids] for doc in docs]
    jobs = [
        (k, w) for k, doc in enumerate(docs) for w in plan_windows(len(doc.ids), seq_length, stride)
    ]
    jobs.sort(key=lambda job: job[1].end - job[1].start, reverse=True)  # little padding per batch
    nll = torch.zeros(len(docs), dtype=torch.float64)
    total = sum(w.end - w.first + 1 for _, w in jobs)
    bar = tqdm(total=total, unit="tok", desc=desc or model.name, disable=not progress, leave=False)
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b : b + batch_size]
        width = max(w.end - w.start for _, w in batch)
        input_ids_BS = torch.full((len(batch), width), prefix, dtype=torch.long)
        for row, (k, w) in enumerate(batch):
            input_ids_BS[row, : w.end - w.start] = torch.tensor(streams[k][w.start : w.end])
        logits_BSV = model.logits(input_ids_BS)
        for row, (k, w) in enumerate(batch):
            # position j of the window predicts stream[start + j + 1]
            logits_TV = logits_BSV[row, w.first - w.start - 1 : w.end - w.start]
            targets_T = torch.tensor(streams[k][w.first : w.end + 1], device=logits_TV.device)
            nll[k] += F.cross_entropy(logits_TV.float(), targets_T, reduction="sum").double().cpu()
            bar.update(w.end - w.first + 1)
        del logits_BSV
    bar.close()
    return EvalResult(
        nll_sum=float(nll.sum()),
        tokens=sum(len(d.ids) for d in docs),
        words=sum(d.words for d in docs),
        characters=sum(d.characters for d in docs),
        bytes=sum(d.bytes for d in docs),
        documents=len(docs),
    )


@contextlib.contextmanager
def _as_model(
    model: str | os.PathLike | LoadedModel, tokenizer: str | os.PathLike | None
) -> Iterator[LoadedModel]:
    if isinstance(model, LoadedModel):
        yield model
    else:
        with open_model(model, tokenizer) as loaded:
            yield loaded


def evaluate_texts(
    model: str | os.PathLike | LoadedModel,
    texts: Sequence[str],
    seq_length: int = DEFAULT_SEQ_LENGTH,
    batch_size: int = DEFAULT_BATCH_SIZE,
    stride: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    prefix_token: str | None = None,
    progress: bool = False,
) -> EvalResult:
    """NLL, token/word/byte counts of ``model`` on ``texts`` (one text = one document).

    Args:
        model: a path (see :func:`open_model`) or an already opened model.
        texts: documents; empty ones count nothing.
        seq_length: window length in input tokens.
        batch_size: windows per forward pass.
        stride: distance between window starts (default ``seq_length``: no overlap).
        tokenizer: tokenizer directory replacing the model's own (paths only).
        prefix_token: token put before each document instead of BOS/EOS.
        progress: show a tqdm bar.

    Returns:
        The summed :class:`EvalResult`.
    """
    with _as_model(model, tokenizer) as m:
        docs = documents_from_texts(m.tokenizer, texts)
        return score_documents(m, docs, seq_length, stride, batch_size, prefix_token, progress)


def evaluate_models(
    models: dict[str, str | os.PathLike] | Sequence[str | os.PathLike],
    datasets: dict[str, str | os.PathLike] | Sequence[DataSpec],
    seq_length: int = DEFAULT_SEQ_LENGTH,
    batch_size: int = DEFAULT_BATCH_SIZE,
    stride: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    prefix_token: str | None = None,
    allow_noncanonical: bool = False,
    progress: bool = False,
) -> PerplexityReport:
    """Evaluate every model on every language; each model is loaded once.

    All data and model paths are checked before the first model is loaded.

    Args:
        models: ``{label: path}`` or paths (label = the path's name).
        datasets: ``{language: path}`` (JSONL, ``.txt``, folder or ``.bin``/``.idx``
            prefix) or prepared :class:`DataSpec`s.
        seq_length, batch_size, stride, prefix_token: see :func:`evaluate_texts`.
        tokenizer: tokenizer replacing every model's own.
        allow_noncanonical: see :func:`documents_from_indexed`.
        progress: tqdm bars.

    Raises:
        EvaluationError: bad data, model paths or settings (nothing is evaluated).
    """
    if not isinstance(models, dict):
        models = {Path(p).name: p for p in models}
    if not models:
        raise EvaluationError("no models to evaluate")
    specs = (
        [load_data(lang, p) for lang, p in datasets.items()]
        if isinstance(datasets, dict)
        else list(datasets)
    )
    if not specs:
        raise EvaluationError("no data to evaluate on")
    plan_windows(1, seq_length, stride)  # validates the settings
    kinds = {label: resolve_model_path(p)[1] for label, p in models.items()}
    report = PerplexityReport(
        settings={
            "seq_length": seq_length,
            "stride": stride if stride is not None else seq_length,
            "batch_size": batch_size,
            "word_counter": "whitespace split (str.split)",
            "prefix": prefix_token or "tokenizer BOS, else EOS",
        }
    )
    for label, path in models.items():
        with open_model(path, tokenizer, name=label) as m:
            _, prefix_str = m.prefix_id(prefix_token)
            for spec in specs:
                if spec.indexed is not None:
                    docs = documents_from_indexed(
                        m.tokenizer, spec.indexed, m.vocab_size, allow_noncanonical
                    )
                else:
                    docs = documents_from_texts(m.tokenizer, spec.texts or [])
                result = score_documents(
                    m,
                    docs,
                    seq_length,
                    stride,
                    batch_size,
                    prefix_token,
                    progress,
                    f"{label}/{spec.language}",
                )
                log.info(
                    "%s on %s: %.4f nats/token, %.3f bits/word over %d tokens, %d words",
                    label,
                    spec.language,
                    result.loss_per_token,
                    result.bits_per_word,
                    result.tokens,
                    result.words,
                )
                report.rows.append(
                    ReportRow(
                        label,
                        spec.language,
                        result,
                        str(m.path),
                        kinds[label],
                        str(spec.path),
                        prefix_str,
                    )
                )
    return report
