"""Keep only the paragraphs that are in a document's language, by counting function words.

Localised manuals leave many pages (or paragraphs) untranslated: most of the Danish
GIMP manual is English. A corpus for continued pretraining of a language should not
be mostly English, so :func:`filter_paragraphs` keeps a paragraph when its language's
most frequent function words outnumber English ones.

Why our own: a language-identification model (fastText ``lid.176``, CLD3) would be a
download or a binary dependency that CI cannot fetch, and the task here is narrow —
telling a known target language from the English it was left in — which a few dozen
function words do reliably on paragraphs of a sentence or more. The word lists below
are ordinary closed-class words of each language written for this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "da": frozenset(
        "og i er at det en et til af på med som den de kan ikke for har var der om fra "
        "eller men vil skal også når hvis så her du jeg vi man dette disse deres sig "
        "blive bliver være hvor hvad ved efter over under mellem meget flere andre".split()
    ),
    "nb": frozenset(
        "og i er at det en et til av på med som den de kan ikke for har var der om fra "
        "eller men vil skal også når hvis så her du jeg vi man dette disse deres seg "
        "bli blir være hvor hva ved etter over under mellom mye flere andre".split()
    ),
    "nn": frozenset(
        "og i er at det ein eit til av på med som den dei kan ikkje for har var der om frå "
        "eller men vil skal òg også når viss så her du eg vi ein dette desse deira seg "
        "bli blir vere kvar kva ved etter over under mellom mykje fleire andre".split()
    ),
    "sv": frozenset(
        "och i är att det en ett till av på med som den de kan inte för har var där om "
        "från eller men vill ska också när om så här du jag vi man detta dessa deras sig "
        "bli blir vara var vad vid efter över under mellan mycket flera andra".split()
    ),
    "en": frozenset(
        "the and is to of a in with that this can not for has was there from or but will "
        "shall also when if so here you i we it these those their be been are what by after "
        "over under between much more other an on as which".split()
    ),
}
"""Frequent closed-class words per language (lower case)."""

SPECIAL_LETTERS: dict[str, str] = {"da": "æøå", "nb": "æøå", "nn": "æøå", "sv": "åäö"}
"""Letters English words do not have: a word with one counts as evidence for the language."""

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass
class FilterStats:
    """What :func:`filter_paragraphs` kept and dropped (paragraphs and characters)."""

    kept: int = 0
    dropped: int = 0
    kept_chars: int = 0
    dropped_chars: int = 0

    def add(self, other: FilterStats) -> None:
        """Add another document's counts."""
        self.kept += other.kept
        self.dropped += other.dropped
        self.kept_chars += other.kept_chars
        self.dropped_chars += other.dropped_chars


def is_language(paragraph: str, lang: str, min_words: int = 6, against: str = "en") -> bool:
    """Whether ``paragraph`` reads as ``lang`` rather than ``against`` (default English).

    A paragraph of at least ``min_words`` words counts as ``lang`` when its words that
    speak for ``lang`` (its function words, and words with letters English lacks such
    as æ, ø, å) are more than twice the function words of ``against``, plus one. Words
    both languages share (``i``, ``a`` ...) count for both, so mixed text is dropped.

    Raises:
        KeyError: no word list for ``lang`` or ``against`` (the message lists the known ones).
    """
    for code in (lang, against):
        if code not in FUNCTION_WORDS:
            raise KeyError(
                f"no function-word list for language {code!r}; known: {sorted(FUNCTION_WORDS)}"
            )
    words = [w.lower() for w in _WORD.findall(paragraph)]
    if len(words) < min_words:
        return False
    letters = SPECIAL_LETTERS.get(lang, "")
    ours = sum(w in FUNCTION_WORDS[lang] or any(c in letters for c in w) for w in words)
    theirs = sum(w in FUNCTION_WORDS[against] for w in words)
    return ours > 2 * theirs + 1


def filter_paragraphs(text: str, lang: str, min_words: int = 6) -> tuple[str, FilterStats]:
    """The paragraphs (lines) of ``text`` that are in ``lang``, joined by newlines, and counts.

    For ``lang == "en"`` every paragraph is kept (there is nothing to tell it from).
    """
    stats = FilterStats()
    keep = []
    for para in text.split("\n"):
        if not para.strip():
            continue
        if lang == "en" or is_language(para, lang, min_words):
            keep.append(para)
            stats.kept += 1
            stats.kept_chars += len(para)
        else:
            stats.dropped += 1
            stats.dropped_chars += len(para)
    return "\n".join(keep), stats
