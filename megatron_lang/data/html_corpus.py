"""Build a JSONL text corpus from HTML manuals (e.g. the Debian GIMP user manual).

Debian's ``gimp-help-{da,nn,en}`` packages install the GIMP user manual as
HTML under ``/usr/share/gimp/2.0/help/<lang>/``: real Danish, Nynorsk and
English prose.  This module turns such a folder into one JSON document per
page (``{"text", "lang", "source", "title"}``), stripping markup with the
standard library's :class:`html.parser.HTMLParser`.  The text is built on the
user's machine; nothing of it is stored in this repository.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

GIMP_HELP_ROOT = Path("/usr/share/gimp/2.0/help")
"""Where Debian's ``gimp-help-*`` packages install the manual, one folder per language."""

_BLOCK_TAGS = frozenset(
    "p div br li ul ol dl dt dd tr table h1 h2 h3 h4 h5 h6 pre blockquote title "
    "section article header footer caption figure".split()
)
_SKIP_TAGS = frozenset({"script", "style", "head"})
_NAV_CLASSES = frozenset({"navheader", "navfooter"})
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


class _TextExtractor(HTMLParser):
    """Collects the visible text of a page, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0  # >0 while inside script/style/head or navigation divs
        self._stack: list[tuple[str, bool]] = []  # (tag, opened a skip region)
        self._in_title = False
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        skip = tag in _SKIP_TAGS or bool(classes & _NAV_CLASSES)
        if tag in ("br", "img", "meta", "link", "hr", "input"):  # void elements
            if tag == "br":
                self.parts.append("\n")
            return
        self._stack.append((tag, skip))
        if skip:
            self._skip_depth += 1
        if tag == "title":
            self._in_title = True
        if tag == "pre":
            self._pre_depth += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        # Pop up to the matching tag (tolerates unclosed inner tags).
        while self._stack:
            open_tag, skip = self._stack.pop()
            if skip:
                self._skip_depth -= 1
            if open_tag == "title":
                self._in_title = False
            if open_tag == "pre":
                self._pre_depth -= 1
            if open_tag == tag:
                break
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        if self._skip_depth:
            return
        if self._pre_depth:
            self.parts.append(data)
        else:
            self.parts.append(data.replace("\n", " "))


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text and title of an HTML page.

    Args:
        html: the page source.

    Returns:
        ``(text, title)``: paragraphs separated by one newline, runs of spaces
        collapsed, navigation headers/footers, scripts and styles dropped.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n")]
    text = "\n".join(line for line in lines if line)
    title = _SPACES.sub(" ", " ".join(parser.title_parts)).strip()
    return text, title


@dataclass
class CorpusStats:
    """What :func:`build_html_corpus` wrote."""

    documents: int = 0
    characters: int = 0
    skipped_empty: int = 0
    heldout_documents: int = 0
    """Documents written to the held-out file (counted in ``documents`` too)."""
    heldout_characters: int = 0
    filtered_paragraphs: int = 0
    """Paragraphs dropped by the language filter."""
    filtered_characters: int = 0


def iter_html_documents(root: Path, lang: str) -> Iterator[dict[str, str]]:
    """One ``{"text", "lang", "source", "title"}`` record per non-empty page under ``root``.

    Args:
        root: folder of ``.html`` files (searched recursively, sorted by path).
        lang: language code stored in each record.
    """
    for path in sorted(Path(root).rglob("*.html")):
        text, title = html_to_text(path.read_text(encoding="utf-8", errors="replace"))
        if text:
            source = f"{lang}/{path.relative_to(root).as_posix()}"
            yield {"text": text, "lang": lang, "source": source, "title": title}


def build_html_corpus(
    output: str | Path,
    languages: list[str],
    root: str | Path = GIMP_HELP_ROOT,
    max_docs_per_language: int | None = None,
    *,
    keep_language: bool = False,
    heldout: str | Path | None = None,
    heldout_every: int = 10,
) -> CorpusStats:
    """Write a JSONL corpus with one document per HTML page of each language folder.

    Args:
        output: the ``.jsonl`` file to write (written to a temporary name, then renamed).
        languages: sub-folders of ``root`` to read, e.g. ``["da", "nn", "en"]``.
        root: the folder holding one sub-folder per language.
        max_docs_per_language: stop after this many documents per language (counting
            held-out ones).
        keep_language: keep only the paragraphs written in the folder's language
            (:func:`megatron_lang.data.langfilter.filter_paragraphs`: untranslated English
            paragraphs of a localised manual are dropped; pages left empty are skipped).
        heldout: also write every ``heldout_every``-th document (per language) to this
            JSONL file instead of ``output`` — a page-level split for evaluation.
        heldout_every: see ``heldout``.

    Returns:
        Counts of what was written.

    Raises:
        FileNotFoundError: when a language folder does not exist (with a hint
            about the Debian packages).
        KeyError: ``keep_language`` for a language without a function-word list.
        ValueError: ``heldout_every`` < 2.
    """
    from megatron_lang.data.langfilter import FUNCTION_WORDS, filter_paragraphs

    output = Path(output)
    root = Path(root)
    if heldout is not None and heldout_every < 2:
        raise ValueError(f"heldout_every={heldout_every}: choose 2 or more")
    for lang in languages:
        folder = root / lang
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; on Debian/Ubuntu install it with "
                f"`apt-get install gimp-help-{lang}`"
            )
        if keep_language and lang not in FUNCTION_WORDS:
            raise KeyError(
                f"keep_language: no function-word list for {lang!r}; known: "
                f"{sorted(FUNCTION_WORDS)}"
            )
    stats = CorpusStats()
    targets = [output] + ([Path(heldout)] if heldout is not None else [])
    tmps = [t.with_name(t.name + ".tmp") for t in targets]
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
    try:
        outs = [open(t, "w", encoding="utf-8") for t in tmps]
        try:
            for lang in languages:
                count = 0
                for record in iter_html_documents(root / lang, lang):
                    if keep_language:
                        text, kept = filter_paragraphs(record["text"], lang)
                        stats.filtered_paragraphs += kept.dropped
                        stats.filtered_characters += kept.dropped_chars
                        if not text:
                            stats.skipped_empty += 1
                            continue
                        record = {**record, "text": text}
                    to_heldout = heldout is not None and count % heldout_every == heldout_every - 1
                    outs[1 if to_heldout else 0].write(
                        json.dumps(record, ensure_ascii=False) + "\n"
                    )
                    stats.documents += 1
                    stats.characters += len(record["text"])
                    if to_heldout:
                        stats.heldout_documents += 1
                        stats.heldout_characters += len(record["text"])
                    count += 1
                    if max_docs_per_language is not None and count >= max_docs_per_language:
                        break
                logger.info("%s: %d documents", lang, count)
        finally:
            for f in outs:
                f.close()
        for tmp, target in zip(tmps, targets):
            tmp.replace(target)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return stats
