"""Vocabulary-size sweep: fertility of the extended base tokenizer against tokens added.

For a list of new-tokenizer sizes (e.g. 1000 2000 4000 8000) the sweep trains a
byte-level BPE on the target-language corpus, extends the base tokenizer with it
(:func:`megatron_lang.adaptation.vocab_extend.extend_tokenizer`, V ⊕ (V′ − V)) and
measures tokens per word (:func:`megatron_lang.adaptation.fertility.measure_fertility`,
regex words) of the base and of every extended tokenizer on held-out texts (the target
language and English), so the size can be chosen before any GPU time is spent.

**One training, prefixes by merge rank.**  The BPE is trained once, at the largest
size; the tokenizer of size k is its first k ids and the merges up to the one that
made id k−1.  HF ``tokenizers``' BPE trainer adds one token per merge, greedily, so
this is exactly the tokenizer that training with ``vocab_size=k`` gives (tested:
same vocabulary and merges).  It makes the sweep's result structural: the tokens a
size adds are a prefix of the tokens every larger size adds, the extended tokenizer of
a larger size has the smaller one's merges as a prefix of its own, and BPE applies
merges by rank, so every text gets no more tokens with a larger size than with a
smaller one (and none more than with the base) — fertility never rises along the
sweep, on any text, the target language and English alike.

Outputs (in ``out_dir``, written to a temporary folder and renamed when complete):
``sweep.md`` (the table), ``sweep.json`` (rows, corpora, options) and ``sweep.png``
(tokens per word and change vs base against tokens added, one line per held-out
text); with ``keep_tokenizers`` also ``tokenizers/new_<max>/`` (the trained BPE) and
``tokenizers/extended_<size>/`` (HF folders, loadable with ``AutoTokenizer``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_lang.adaptation.fertility import (
    WORD_REGEX,
    FertilityReport,
    _label,
    load_counting_tokenizer,
    measure_fertility,
)
from megatron_lang.adaptation.tokenizer_files import TokenizerError, atomic_output_dir
from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer
from megatron_lang.adaptation.vocab_extend import (
    _check_bpe,
    _merge_pair,
    _resolve,
    extend_tokenizer,
)
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

OUTPUT_FILES = ("sweep.md", "sweep.json", "sweep.png")


@dataclass
class SweepConfig:
    """Options of :func:`run_sweep`."""

    corpus: list[str]
    """Training corpus: JSONL (text under ``text_key``) / ``.txt`` files or folders."""
    heldout: list[str]
    """Held-out texts, ``"LABEL=PATH"`` (or ``PATH``); the first is the target language."""
    base_tokenizer: str
    """Base tokenizer: HF byte-level BPE folder or ``tokenizer.json``."""
    sizes: list[int]
    """Vocabulary sizes of the new tokenizer (special tokens included), e.g. 1000 … 8000."""
    out_dir: str
    """Folder to write (must not exist or be empty unless ``overwrite``)."""
    text_key: str = "text"
    max_docs: int | None = None
    """Train on at most this many documents of ``corpus``."""
    max_chars: int | None = None
    """Stop reading ``corpus`` after this many characters (whole documents)."""
    heldout_max_docs: int | None = None
    """Measure on at most this many documents of each held-out text."""
    min_frequency: int = 2
    """BPE: a pair must occur this often to be merged."""
    mask_token: str | None = None
    """As ``extend_vocab.py --mask-token`` (appended after the new tokens)."""
    special_tokens: list[str] = field(default_factory=list)
    """As ``extend_vocab.py --special-tokens``."""
    keep_tokenizers: bool = False
    """Also write the trained and the extended tokenizers under ``out_dir/tokenizers``."""
    overwrite: bool = False


@dataclass
class SweepRow:
    """One tokenizer of the sweep (the base: ``size`` 0, ``added`` 0)."""

    size: int
    """requested vocabulary size of the new tokenizer (0: the base tokenizer)"""
    new_tokenizer_size: int
    """vocabulary size of the new tokenizer as trained (below ``size`` if the corpus ran out)"""
    added: int
    """tokens appended to the base (intermediate pieces included, special tokens not)"""
    vocab_size: int
    """size of the (extended) tokenizer, special tokens included"""
    tokens: dict[str, int]
    """held-out label -> tokens"""
    tokens_per_word: dict[str, float]
    """held-out label -> tokens / regex word"""
    tokens_per_word_whitespace: dict[str, float]
    """held-out label -> tokens / whitespace word"""
    change: dict[str, float]
    """held-out label -> relative change of tokens/word vs the base (−0.08 = 8 % fewer)"""


@dataclass
class SweepResult:
    """What :func:`run_sweep` measured and wrote."""

    rows: list[SweepRow]
    labels: list[str]
    corpora: dict[str, dict]
    train: dict
    out_dir: str
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The ``sweep.json`` document."""
        return {
            "word_counting": {"tokens_per_word": WORD_REGEX, "regex_module": "re"},
            "tokens": "without special tokens; ratios are corpus totals",
            "method": "one BPE trained at the largest size; size k = its first k ids "
            "(= training with vocab_size k)",
            "labels": self.labels,
            "heldout": self.corpora,
            "train": self.train,
            "rows": [asdict(r) for r in self.rows],
            "seconds": round(self.seconds, 2),
        }


def truncate_bpe(big: dict, size: int) -> dict:
    """The ``tokenizer.json`` of the BPE that training with ``vocab_size=size`` gives.

    Args:
        big: ``tokenizer.json`` (parsed) of an HF BPE trained at a size >= ``size``.
        size: the smaller vocabulary size (special tokens included).

    Returns:
        A new dict: ids below ``size``, and the merges up to the one that made id
        ``size - 1`` (all merges when ``size`` is not below the big vocabulary).
    """
    data = json.loads(json.dumps(big))
    vocab = data["model"]["vocab"]
    merges = data["model"]["merges"]
    if size <= max(vocab.values()):
        keep = len(merges)
        for i, m in enumerate(merges):
            if vocab.get("".join(_merge_pair(m))) == size - 1:
                keep = i + 1
                break
        else:
            keep = 0  # id size-1 is a special token or a byte symbol: no merges yet
        data["model"]["merges"] = merges[:keep]
        data["model"]["vocab"] = {t: i for t, i in vocab.items() if i < size}
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < size]
    return data


def _check_inputs(config: SweepConfig) -> list[int]:
    if not config.sizes:
        raise TokenizerError("no sizes given (--sizes)")
    if len(set(config.sizes)) != len(config.sizes):
        raise TokenizerError(f"--sizes has duplicates: {config.sizes}")
    minimum = 256 + len(TrainConfig([], "").specials()) + 1
    if min(config.sizes) < minimum:
        raise TokenizerError(
            f"--sizes {min(config.sizes)} is too small: the 256 byte symbols and the "
            f"special tokens need at least {minimum}"
        )
    if not config.heldout:
        raise TokenizerError("no held-out texts given (--heldout LABEL=PATH ...)")
    labels = [_label(h)[0] for h in config.heldout]
    if len(set(labels)) != len(labels):
        raise TokenizerError(f"held-out labels are not unique: {labels} (use LABEL=PATH)")
    for spec in config.heldout:
        path = Path(_label(spec)[1])
        if not path.exists():
            raise TokenizerError(f"{path}: held-out file does not exist")
    kind, base_file = _resolve(config.base_tokenizer, "base")
    if kind != "hf":
        raise TokenizerError(
            f"{base_file}: the sweep supports byte-level BPE base tokenizers (tokenizer.json) only"
        )
    try:
        _check_bpe(json.loads(base_file.read_text(encoding="utf-8")), base_file)
    except ValueError as err:
        raise TokenizerError(f"{base_file}: bad tokenizer.json ({err})") from err
    return sorted(config.sizes)


def run_sweep(config: SweepConfig, progress: Callable[[str], None] | None = None) -> SweepResult:
    """Train, extend and measure for every size; write the table, JSON and plot.

    Args:
        config: inputs, sizes and options (see :class:`SweepConfig`).
        progress: called with one line per step (default: the logger).

    Returns:
        The :class:`SweepResult`; ``rows[0]`` is the base tokenizer, then one row per
        size in increasing order.

    Raises:
        TokenizerError: a missing or bad input (named), a base that is not byte-level
            BPE, a size too small for BPE, duplicate sizes or labels, or an existing
            output folder; nothing is written then.
    """
    say = progress or logger.info
    start = time.perf_counter()
    sizes = _check_inputs(config)
    labels = [_label(h)[0] for h in config.heldout]
    with atomic_output_dir(config.out_dir, config.overwrite) as tmp:
        work = tmp / "tokenizers"
        say(f"base {config.base_tokenizer}: measuring held-out {', '.join(labels)}")
        base_tok = load_counting_tokenizer(f"base={config.base_tokenizer}")
        base_rep = _measure(config, [base_tok])
        big_size = sizes[-1]
        big_dir = work / f"new_{big_size}"
        say(f"training BPE {big_size} on {', '.join(config.corpus)}")
        train = train_tokenizer(
            TrainConfig(
                inputs=list(config.corpus),
                output_dir=str(big_dir),
                kind="bpe",
                vocab_size=big_size,
                text_key=config.text_key,
                max_docs=config.max_docs,
                max_chars=config.max_chars,
                min_frequency=config.min_frequency,
            )
        )
        big = json.loads((big_dir / "tokenizer.json").read_text(encoding="utf-8"))
        rows = [_row(0, 0, 0, base_tok.vocab_size, base_rep, "base", labels, None)]
        toks, reports = [], {}
        for i, size in enumerate(sizes, 1):
            new_dir = work / f"new_{size}"
            if size != big_size:
                new_dir.mkdir(parents=True)
                (new_dir / "tokenizer.json").write_text(
                    json.dumps(truncate_bpe(big, size), ensure_ascii=False), encoding="utf-8"
                )
            ext_dir = work / f"extended_{size}"
            rep = extend_tokenizer(
                config.base_tokenizer,
                new_dir,
                ext_dir,
                add_special_tokens=config.special_tokens,
                mask_token=config.mask_token,
            )
            reports[size] = rep
            if rep.new_tokenizer_size < size:
                say(f"size {size}: the corpus gave only {rep.new_tokenizer_size} tokens")
            toks.append(load_counting_tokenizer(f"{size}={ext_dir}"))
            say(f"[{i}/{len(sizes)}] size {size}: {rep.added} tokens added, vocab {rep.final_size}")
            if size != big_size:
                shutil.rmtree(new_dir)
        say(f"measuring {len(toks)} extended tokenizers on {', '.join(labels)}")
        ext_rep = _measure(config, toks)
        for size in sizes:
            rep = reports[size]
            rows.append(
                _row(size, rep.new_tokenizer_size, rep.added, rep.final_size, ext_rep, str(size),
                     labels, rows[0])
            )  # fmt: skip
        result = SweepResult(
            rows=rows,
            labels=labels,
            corpora=base_rep.corpora,
            train={k: train[k] for k in ("vocab_size", "documents", "characters")}
            | {"corpus": list(config.corpus), "min_frequency": config.min_frequency},
            out_dir=str(config.out_dir),
        )
        if not config.keep_tokenizers:
            shutil.rmtree(work)
        result.seconds = time.perf_counter() - start
        (tmp / "sweep.md").write_text(format_markdown(result) + "\n", encoding="utf-8")
        (tmp / "sweep.json").write_text(
            json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        plot_sweep(result, tmp / "sweep.png")
    say(f"wrote {', '.join(str(Path(config.out_dir) / f) for f in OUTPUT_FILES)}")
    return result


def _measure(config: SweepConfig, toks) -> FertilityReport:
    return measure_fertility(
        list(config.heldout),
        toks,
        text_key=config.text_key,
        max_docs=config.heldout_max_docs,
        progress=False,
    )


def _row(size, new_size, added, vocab, report, tok, labels, base: SweepRow | None) -> SweepRow:
    got = {lab: report.get(lab, tok) for lab in labels}
    tpw = {lab: r.fertility_regex for lab, r in got.items()}
    change = {lab: (tpw[lab] / base.tokens_per_word[lab] - 1.0) if base else 0.0 for lab in labels}
    return SweepRow(
        size=size,
        new_tokenizer_size=new_size,
        added=added,
        vocab_size=vocab,
        tokens={lab: r.tokens for lab, r in got.items()},
        tokens_per_word=tpw,
        tokens_per_word_whitespace={lab: r.fertility_whitespace for lab, r in got.items()},
        change=change,
    )


def format_markdown(result: SweepResult) -> str:
    """The ``sweep.md`` table: one line per tokenizer, tokens/word and change per text.

    A size the corpus could not fill (no pair left with ``min_frequency``) shows the
    size trained, e.g. ``8,000 (trained: 5,234)``.  The last column is the marginal gain on the first (target) text: the fall in its
    tokens per word per 1,000 tokens added since the previous row.
    """
    first = result.labels[0]
    head = ["new tokenizer size", "tokens added", "vocab"]
    for lab in result.labels:
        head += [f"{lab} tok/word", f"{lab} vs base"]
    head.append(f"{first} gain per 1k added")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    prev = None
    for r in result.rows:
        size = f"{r.size:,}" if r.size else "base"
        if r.size and r.new_tokenizer_size < r.size:
            size += f" (trained: {r.new_tokenizer_size:,})"
        cells = [size, f"{r.added:,}", f"{r.vocab_size:,}"]
        for lab in result.labels:
            cells += [f"{r.tokens_per_word[lab]:.3f}", f"{100 * r.change[lab]:+.2f} %"]
        if prev is None or r.added == prev.added:
            cells.append("")
        else:
            gain = (prev.tokens_per_word[first] - r.tokens_per_word[first]) / (
                (r.added - prev.added) / 1000
            )
            cells.append(f"{gain:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
        prev = r
    return "\n".join(lines)


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """PNG: tokens per word (left) and change vs base (right) against tokens added.

    One line per held-out text; the points are labelled with the new tokenizer's size.
    Written to a temporary name, then renamed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = [r.added for r in result.rows]
    for lab in result.labels:
        axes[0].plot(xs, [r.tokens_per_word[lab] for r in result.rows], marker="o", label=lab)
        axes[1].plot(xs, [100 * r.change[lab] for r in result.rows], marker="o", label=lab)
    for r in result.rows[1:]:
        axes[0].annotate(
            f"{r.size}", (r.added, r.tokens_per_word[result.labels[0]]), fontsize=7,
            textcoords="offset points", xytext=(3, 4),
        )  # fmt: skip
    axes[0].set_ylabel("tokens per word (held-out)")
    axes[1].set_ylabel("change vs base tokenizer (%)")
    axes[1].axhline(0, color="grey", lw=0.8)
    for ax in axes:
        ax.set_xlabel("tokens added to the base vocabulary")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("vocabulary-size sweep (labels: new tokenizer size)", fontsize=10)
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
