"""Results of a perplexity evaluation: per-model x language sums and the derived figures.

See :mod:`megatron_lang.analysis.perplexity` for how documents are scored.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FORMAT = "megatron_lang.perplexity/1"
"""``format`` field of the JSON report."""


@dataclass
class EvalResult:
    """Summed negative log-likelihood and counts of one model on one set of documents."""

    nll_sum: float = 0.0
    """Total NLL in nats over all scored tokens."""
    tokens: int = 0
    """Scored tokens (every text token; the prefix token is not counted)."""
    words: int = 0
    """Whitespace-separated words of the texts (:func:`count_words`)."""
    characters: int = 0
    """Unicode code points of the texts."""
    bytes: int = 0
    """UTF-8 bytes of the texts."""
    documents: int = 0
    """Documents evaluated."""

    @property
    def loss_per_token(self) -> float:
        """Mean NLL per token in nats."""
        return self.nll_sum / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        """Per-token perplexity ``exp(loss_per_token)``."""
        return math.exp(self.loss_per_token) if self.tokens else math.nan

    @property
    def loss_per_word(self) -> float:
        """NLL per word in nats."""
        return self.nll_sum / self.words if self.words else math.nan

    @property
    def perplexity_per_word(self) -> float:
        """Per-word perplexity ``exp(loss_per_word)`` (inf when it overflows)."""
        if not self.words:
            return math.nan
        return math.exp(self.loss_per_word) if self.loss_per_word < 700 else math.inf

    @property
    def bits_per_word(self) -> float:
        """``nll_sum / ln 2 / words``."""
        return self.nll_sum / math.log(2) / self.words if self.words else math.nan

    @property
    def bits_per_byte(self) -> float:
        """``nll_sum / ln 2 / bytes``."""
        return self.nll_sum / math.log(2) / self.bytes if self.bytes else math.nan

    @property
    def tokens_per_word(self) -> float:
        """Fertility of the tokenizer on these texts."""
        return self.tokens / self.words if self.words else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Counts and all derived figures (the ``metrics`` object of the JSON report)."""
        d: dict[str, Any] = asdict(self)
        for name in (
            "loss_per_token",
            "perplexity",
            "loss_per_word",
            "perplexity_per_word",
            "bits_per_word",
            "bits_per_byte",
            "tokens_per_word",
        ):
            value = getattr(self, name)
            d[name] = value if math.isfinite(value) else None
        return d


@dataclass
class ReportRow:
    """One model on one language."""

    model: str
    language: str
    result: EvalResult
    model_path: str = ""
    model_kind: str = ""
    data: str = ""
    prefix_token: str = ""


@dataclass
class PerplexityReport:
    """Results of :func:`evaluate_models`, one row per model × language."""

    rows: list[ReportRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def get(self, model: str, language: str) -> EvalResult:
        """The result of ``model`` on ``language``.

        Raises:
            KeyError: no such row.
        """
        for row in self.rows:
            if row.model == model and row.language == language:
                return row.result
        raise KeyError(f"no result for model {model!r} on {language!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (schema in ``docs/analysis.md``)."""
        return {
            "format": REPORT_FORMAT,
            "settings": self.settings,
            "results": [
                {
                    "model": r.model,
                    "model_path": r.model_path,
                    "model_kind": r.model_kind,
                    "language": r.language,
                    "data": r.data,
                    "prefix_token": r.prefix_token,
                    **r.result.to_dict(),
                }
                for r in self.rows
            ],
        }

    def table(self) -> str:
        """Console table, one line per model × language."""
        head = (
            "model",
            "lang",
            "docs",
            "tokens",
            "words",
            "tok/word",
            "loss/tok",
            "ppl/tok",
            "loss/word",
            "bits/word",
            "bits/byte",
        )
        lines = [head]
        for r in self.rows:
            e = r.result
            lines.append(
                (
                    r.model,
                    r.language,
                    str(e.documents),
                    str(e.tokens),
                    str(e.words),
                    f"{e.tokens_per_word:.3f}",
                    f"{e.loss_per_token:.4f}",
                    f"{e.perplexity:.2f}",
                    f"{e.loss_per_word:.4f}",
                    f"{e.bits_per_word:.3f}",
                    f"{e.bits_per_byte:.4f}",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = []
        for k, line in enumerate(lines):
            cells = [
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
            ]
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
