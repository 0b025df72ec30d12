"""Tokenizer fertility: tokens per word (and characters per token) per corpus and tokenizer.

Words are counted two ways, both on the raw document text:

* ``whitespace``: ``len(text.split())`` — Python's ``str.split()`` without
  arguments, i.e. maximal runs of non-whitespace characters (Unicode whitespace);
  punctuation stays attached (``"verden!"`` is one word).
* ``regex``: matches of :data:`WORD_REGEX` = ``\\w+(?:[-'’]\\w+)*`` with the
  standard ``re`` module on ``str`` (Unicode ``\\w``: letters, digits and ``_``);
  hyphen/apostrophe compounds are one word (``"rødgrød-med-fløde"``, ``"it's"``),
  punctuation and symbols are not words.

Tokens are counted without special tokens (no BOS/EOS).  Figures are corpus-level
ratios: total tokens / total words, total characters / total tokens.

Tokenizers: an HF folder (``tokenizer.json``) or ``tokenizer.json`` file, a
SentencePiece model file (any name, e.g. ``tokenizer.model.v1``; encoded with the
``sentencepiece`` library), or a Mistral *tekken* JSON (converted offline with
``transformers.integrations.mistral.tokenizer.convert_tekken_tokenizer``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_lang.adaptation.tokenizer_files import TokenizerError, load_sp_proto
from megatron_lang.adaptation.tokenizer_train import read_texts
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

WORD_REGEX = r"\w+(?:[-'’]\w+)*"
"""Pattern of a word for the ``regex`` count (Python ``re``, Unicode strings)."""
_WORD = re.compile(WORD_REGEX)


def count_words(text: str) -> tuple[int, int]:
    """``(whitespace words, regex words)`` of ``text`` (see the module docstring)."""
    return len(text.split()), sum(1 for _ in _WORD.finditer(text))


@dataclass
class CountingTokenizer:
    """A tokenizer reduced to what fertility needs: a label and token counts."""

    label: str
    path: str
    kind: str  # "hf" | "sentencepiece" | "tekken"
    vocab_size: int
    count: Callable[[list[str]], list[int]] = field(repr=False)


def _hf_counter(tok) -> Callable[[list[str]], list[int]]:
    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    return count


def load_counting_tokenizer(spec: str) -> CountingTokenizer:
    """Load ``"label=path"`` or ``"path"`` (label: the folder or file name).

    Raises:
        TokenizerError: the path is missing or of an unknown tokenizer type.
    """
    label, sep, raw = spec.partition("=")
    if not sep:
        label, raw = "", spec
    path = Path(raw)
    label = label or (path.name if path.is_dir() else path.name.split(".")[0] or path.name)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif (path / "tokenizer.model").is_file():
            path = path / "tokenizer.model"
        else:
            raise TokenizerError(f"{path}: folder has no tokenizer.json or tokenizer.model")
    if not path.is_file():
        raise TokenizerError(f"{path}: no such tokenizer file or folder")
    with open(path, "rb") as f:
        head = f.read(1)
    if head == b"{":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise TokenizerError(f"{path}: unknown tokenizer type (bad JSON: {err})") from err
        if isinstance(data, dict) and "model" in data:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(json.dumps(data))
            n = tok.get_vocab_size(with_added_tokens=True)
            return CountingTokenizer(label, str(path), "hf", n, _hf_counter(tok))
        if isinstance(data, dict) and "config" in data and "vocab" in data:
            from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

            tok = convert_tekken_tokenizer(str(path)).backend_tokenizer
            n = tok.get_vocab_size(with_added_tokens=True)
            return CountingTokenizer(label, str(path), "tekken", n, _hf_counter(tok))
        raise TokenizerError(
            f"{path}: unknown tokenizer type (JSON is neither a tokenizer.json nor tekken)"
        )
    try:
        load_sp_proto(path)
    except TokenizerError as err:
        raise TokenizerError(
            f"{path}: unknown tokenizer type (not JSON, not SentencePiece)"
        ) from err
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))

    def count(texts: list[str]) -> list[int]:
        return [len(x) for x in sp.encode(texts)]

    return CountingTokenizer(label, str(path), "sentencepiece", sp.get_piece_size(), count)


@dataclass
class FertilityRow:
    """One corpus × tokenizer measurement (the JSON ``results`` entries)."""

    corpus: str
    tokenizer: str
    documents: int
    characters: int
    words_whitespace: int
    words_regex: int
    tokens: int
    fertility_whitespace: float
    """tokens / whitespace words"""
    fertility_regex: float
    """tokens / regex words"""
    chars_per_token: float


@dataclass
class FertilityReport:
    """All measurements plus how words were counted."""

    rows: list[FertilityRow]
    tokenizers: dict[str, dict]
    corpora: dict[str, dict]
    word_regex: str = WORD_REGEX

    def to_json(self) -> dict:
        """The JSON document (see ``docs/tokenizer.md`` for the fields)."""
        return {
            "word_counting": {
                "whitespace": "len(text.split()) (Python str.split, Unicode whitespace)",
                "regex": self.word_regex,
                "regex_module": "re",
            },
            "tokens": "without special tokens; ratios are corpus totals",
            "tokenizers": self.tokenizers,
            "corpora": self.corpora,
            "results": [asdict(r) for r in self.rows],
        }

    def get(self, corpus: str, tokenizer: str) -> FertilityRow:
        """The row of ``corpus`` × ``tokenizer`` (labels)."""
        for row in self.rows:
            if row.corpus == corpus and row.tokenizer == tokenizer:
                return row
        raise KeyError((corpus, tokenizer))


def _label(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec).name
        label = name.split(".")[0] or name
    return label, path


def _measure_corpus(
    path: str,
    toks: list[CountingTokenizer],
    text_key: str,
    max_docs: int | None,
    max_chars: int | None,
    batch_size: int,
    label: str,
    quiet: bool,
) -> tuple[int, int, int, int, dict[str, int]]:
    """``(documents, characters, whitespace words, regex words, tokens per tokenizer)``."""
    from tqdm import tqdm

    docs = chars = ws = rx = 0
    tokens = {t.label: 0 for t in toks}
    batch: list[str] = []
    with tqdm(total=max_docs, desc=label, unit="doc", disable=quiet, leave=False) as bar:
        for text in read_texts([path], text_key, max_docs, max_chars):
            w, r = count_words(text)
            docs, chars, ws, rx = docs + 1, chars + len(text), ws + w, rx + r
            batch.append(text)
            if len(batch) >= batch_size:
                for t in toks:
                    tokens[t.label] += sum(t.count(batch))
                bar.update(len(batch))
                batch = []
        if batch:
            for t in toks:
                tokens[t.label] += sum(t.count(batch))
            bar.update(len(batch))
    return docs, chars, ws, rx, tokens


def measure_fertility(
    corpora: list[str],
    tokenizers: list[str | CountingTokenizer],
    text_key: str = "text",
    max_docs: int | None = None,
    max_chars: int | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
) -> FertilityReport:
    """Tokens per word of every corpus with every tokenizer.

    Args:
        corpora: ``"label=path"`` or paths of JSONL / ``.txt`` files or folders.
        tokenizers: ``"label=path"`` / paths (see :func:`load_counting_tokenizer`)
            or loaded tokenizers.
        text_key: JSON key of the text.
        max_docs: per corpus, use only the first ``max_docs`` documents.
        max_chars: per corpus, stop after this many characters (whole documents).
        batch_size: documents per encode call.
        progress: tqdm bar over documents (None: only on a terminal).

    Returns:
        The report; corpora with no documents or no words are an error.

    Raises:
        TokenizerError: a missing/unknown tokenizer, a missing or bad corpus file, an
            empty corpus, or labels that are not unique.
    """

    toks = [
        t if isinstance(t, CountingTokenizer) else load_counting_tokenizer(t) for t in tokenizers
    ]
    labels = [_label(c) for c in corpora]
    for kind, names in (("tokenizer", [t.label for t in toks]), ("corpus", [x for x, _ in labels])):
        if len(set(names)) != len(names):
            raise TokenizerError(f"{kind} labels are not unique: {names} (use LABEL=PATH)")
    if not toks or not corpora:
        raise TokenizerError("need at least one corpus (--input) and one tokenizer (--tokenizer)")
    rows: list[FertilityRow] = []
    info: dict[str, dict] = {}
    for label, path in labels:
        quiet = progress is False or (progress is None and not sys.stderr.isatty())
        docs, chars, ws, rx, tokens = _measure_corpus(
            path, toks, text_key, max_docs, max_chars, batch_size, label, quiet
        )
        if not docs or not rx or not ws:
            raise TokenizerError(f"{path}: empty corpus (no documents or no words)")
        info[label] = {
            "path": path,
            "documents": docs,
            "characters": chars,
            "words_whitespace": ws,
            "words_regex": rx,
        }
        for t in toks:
            n = tokens[t.label]
            rows.append(
                FertilityRow(label, t.label, docs, chars, ws, rx, n, n / ws, n / rx, chars / n)
            )
        logger.info("%s: %d documents, %d regex words", label, docs, rx)
    tok_info = {t.label: {"path": t.path, "kind": t.kind, "vocab_size": t.vocab_size} for t in toks}
    return FertilityReport(rows, tok_info, info)


def format_table(report: FertilityReport) -> str:
    """A fixed-width console table, one line per corpus × tokenizer."""
    head = ("corpus", "tokenizer", "vocab", "docs", "tok/word(re)", "tok/word(ws)", "chars/tok")
    lines = [head]
    for r in report.rows:
        vocab = str(report.tokenizers[r.tokenizer]["vocab_size"])
        lines.append(
            (r.corpus, r.tokenizer, vocab, str(r.documents), f"{r.fertility_regex:.3f}",
             f"{r.fertility_whitespace:.3f}", f"{r.chars_per_token:.3f}")
        )  # fmt: skip
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = []
    for j, line in enumerate(lines):
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
            )
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot_fertility(report: FertilityReport, path: str | Path) -> Path:
    """A PNG bar chart: tokens per word (regex words) and characters per token.

    Args:
        report: from :func:`measure_fertility`.
        path: the ``.png`` to write (written to a temporary name, then renamed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    corpora = list(report.corpora)
    toks = list(report.tokenizers)
    x = np.arange(len(corpora))
    width = 0.8 / len(toks)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(corpora) + 6), 4.5))
    metrics = (("fertility_regex", "tokens per word"), ("chars_per_token", "characters per token"))
    for ax, (metric, title) in zip(axes, metrics):
        for i, tok in enumerate(toks):
            values = [getattr(report.get(c, tok), metric) for c in corpora]
            bars = ax.bar(x + (i - (len(toks) - 1) / 2) * width, values, width, label=tok)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, corpora)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def write_report_json(report: FertilityReport, path: str | Path) -> Path:
    """Write :meth:`FertilityReport.to_json` to ``path`` (temporary name, then renamed)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out
