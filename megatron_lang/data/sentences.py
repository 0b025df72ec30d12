"""Sentence splitting with NLTK punkt, trained on the corpus itself (no downloads).

Punkt learns abbreviations, collocations and sentence starters without
supervision, so parameters trained on a few MB of the target-language corpus
work for Danish, Nynorsk and friends for which NLTK ships no model.  The
parameters are saved as a small JSON file and reused with ``--punkt-params``.

Splitting is lossless: sentence ``i`` covers the text from the end of
sentence ``i-1`` (so it starts with the whitespace before it, which byte-level
BPE and SentencePiece attach to the next word anyway) to its own end; the
last sentence runs to the end of the document.  Concatenating the sentences
gives the document back exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

# A plain stdlib logger under the ``megatron_lang`` hierarchy (the platform's handler applies once
# ``megatron_lang.platform.logging`` is configured, as the CLIs do).  Importing the platform
# package here would load torch in every preprocessing worker process.
logger = logging.getLogger(__name__)

PARAMS_FORMAT = "megatron_lang.punkt/1"


def train_punkt(texts: Iterable[str], max_chars: int = 8_000_000) -> PunktParameters:
    """Train punkt parameters on (a prefix of) a corpus.

    Args:
        texts: documents, in corpus order.
        max_chars: stop after this many characters of training text.

    Returns:
        The learned parameters.
    """
    trainer = PunktTrainer()
    seen = 0
    for text in texts:
        trainer.train(text, finalize=False)
        seen += len(text)
        if seen >= max_chars:
            break
    trainer.finalize_training()
    params = trainer.get_params()
    logger.info(
        "punkt trained on %d characters: %d abbreviations, %d collocations, %d sentence starters",
        seen,
        len(params.abbrev_types),
        len(params.collocations),
        len(params.sent_starters),
    )
    return params


def params_to_dict(params: PunktParameters) -> dict:
    """JSON-serialisable form of punkt parameters (sorted, so files are reproducible)."""
    return {
        "format": PARAMS_FORMAT,
        "abbrev_types": sorted(params.abbrev_types),
        "collocations": sorted([a, b] for a, b in params.collocations),
        "sent_starters": sorted(params.sent_starters),
        "ortho_context": dict(sorted(params.ortho_context.items())),
    }


def params_from_dict(data: dict) -> PunktParameters:
    """Inverse of :func:`params_to_dict`."""
    if data.get("format") != PARAMS_FORMAT:
        raise ValueError(f"not a punkt parameter file (format {data.get('format')!r})")
    params = PunktParameters()
    params.abbrev_types = set(data["abbrev_types"])
    params.collocations = {(a, b) for a, b in data["collocations"]}
    params.sent_starters = set(data["sent_starters"])
    for word, flags in data["ortho_context"].items():
        params.add_ortho_context(word, int(flags))
    return params


def save_params(params: PunktParameters, path: str | Path) -> None:
    """Write parameters as JSON (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(params_to_dict(params), ensure_ascii=False, indent=0))
    tmp.replace(path)


def load_params(path: str | Path) -> PunktParameters:
    """Read parameters written by :func:`save_params`."""
    return params_from_dict(json.loads(Path(path).read_text()))


class SentenceSplitter:
    """Splits documents into sentences losslessly with given punkt parameters.

    Args:
        params: punkt parameters (trained or loaded).
    """

    def __init__(self, params: PunktParameters) -> None:
        self._tokenizer = PunktSentenceTokenizer(params)

    def split(self, text: str) -> list[str]:
        """Sentences of ``text``; ``"".join(result) == text``."""
        ends = [end for _, end in self._tokenizer.span_tokenize(text)]
        if not ends:
            return [text]
        ends[-1] = len(text)
        pieces, start = [], 0
        for end in ends:
            if end > start:
                pieces.append(text[start:end])
                start = end
        return pieces
