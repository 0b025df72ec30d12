"""Downstream task data built on the user's machine from real text that needs no hub.

Sources (each package's licence applies; nothing is stored in the repository):

* Debian's human translations of package descriptions (DDTP, :mod:`megatron_lang.data.ddtp`),
  **only the ``eval`` packages** of :func:`megatron_lang.data.ddtp.assign_splits` (the
  split the instruction-data tool never writes), so no evaluated package is trained on;
* any held-out text the user names (JSONL ``text`` / ``.txt`` / folders), for bits per byte.

Tasks (``{lang}`` is the translation language, e.g. ``da``):

``{lang}_ddtp_bpb``
    ``loglikelihood_rolling`` over each held-out description (short + long text):
    bits per byte, byte and word perplexity.
``{lang}_ddtp_translate``
    English → ``{lang}`` translation of the one-line short descriptions,
    ``generate_until`` a newline, scored by chrF (sacrebleu, corpus level).
``{lang}_scala_ddtp``
    ScaLA-style linguistic acceptability: a real sentence of a held-out description
    against the same sentence with two adjacent words swapped or one word dropped (as
    ScandEval builds ScaLA); the model is right when it gives the original the higher
    log-likelihood (``multiple_choice`` over the pair, accuracy).
``{lang}_ddtp_section``
    Which Debian section a package belongs to, from its translated description, among
    the ``n_sections`` most common sections (``multiple_choice``, accuracy and
    length-normalised accuracy).
``{name}_bpb``
    Bits per byte of a user text (``--text NAME=FILE``).

Each task is a YAML file for lm-evaluation-harness (``dataset_path: json`` on the local
JSONL), written from the templates in ``megatron_lang/downstream/tasks/`` with the data
folder filled in; :mod:`megatron_lang.downstream.harness` runs them with
``include_path`` on that folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megatron_lang.data.ddtp import DdtpEntry, assign_splits
from megatron_lang.platform import get_logger
from megatron_lang.platform.files import atomic_output_dir

log = get_logger(__name__)

TEMPLATES = Path(__file__).with_name("tasks")
"""The shipped lm-eval task templates (``@DATA@``, ``@LANG@``, ``@NAME@`` filled in)."""

MANIFEST = "manifest.json"

PROMPTS = {
    "da": {
        "translate": "Oversæt fra engelsk til dansk.\nEngelsk: {{en}}\nDansk:",
        "section": "Pakkebeskrivelse: {{text}}\nDebian-sektion:",
    },
    "nb": {
        "translate": "Oversett fra engelsk til norsk.\nEngelsk: {{en}}\nNorsk:",
        "section": "Pakkebeskrivelse: {{text}}\nDebian-seksjon:",
    },
    "pl": {
        "translate": "Przetłumacz z angielskiego na polski.\nAngielski: {{en}}\nPolski:",
        "section": "Opis pakietu: {{text}}\nSekcja Debiana:",
    },
}
"""Prompts per language (Jinja over the task's JSONL fields, as lm-eval reads them)."""

LICENCE_NOTE = (
    "Built from Debian package descriptions and their DDTP translations on this machine; "
    "each package's licence (/usr/share/doc/<package>/copyright) applies to its text. "
    "Do not redistribute without checking."
)


class DownstreamDataError(ValueError):
    """Unusable input for the task data (named: file, language, task)."""


# ----------------------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÆØÅÄÖÜ0-9\"'(])")
_WORD = re.compile(r"\S+")


def sentences(text: str, min_words: int = 5, max_words: int = 30) -> list[str]:
    """Plain prose sentences of a description: one line, ``min_words``..``max_words``
    words, ending in ``.``/``!``/``?``, mostly letters (no lists, paths or code)."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        if re.search(r"^\s*[-*•o]\s", para, flags=re.M):  # bullet lists
            continue
        flat = " ".join(para.split())
        for s in _SENTENCE_END.split(flat):
            words = s.split()
            if not (min_words <= len(words) <= max_words) or s[-1] not in ".!?":
                continue
            if not s[0].isupper():
                continue
            letters = sum(c.isalpha() or c.isspace() for c in s)
            if letters < 0.85 * len(s) or any(t in s for t in ("/", "://", "_", "=", "<")):
                continue
            out.append(s)
    return out


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFC", s).split())


def corrupt(sentence: str, rng: random.Random, originals: set[str]) -> tuple[str, str] | None:
    """``(kind, corrupted)``: two adjacent words swapped (``swap``) or one word dropped
    (``drop``), chosen at random; never the original nor another original sentence.
    The final punctuation stays where it is; None when no corruption qualifies."""
    words = sentence.split()
    end = ""
    if words[-1][-1] in ".!?":
        end, words = words[-1][-1], [*words[:-1], words[-1][:-1]]
    kinds = ["swap", "drop"]
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "swap":
            spots = [i for i in range(len(words) - 1) if words[i].lower() != words[i + 1].lower()]
        else:
            spots = [i for i in range(1, len(words)) if len(words) > 3]
        rng.shuffle(spots)
        for i in spots:
            new = list(words)
            if kind == "swap":
                new[i], new[i + 1] = new[i + 1], new[i]
                if i == 0:  # keep sentence case: the first word stays capitalised
                    new[0], new[1] = _cap(new[0], True), _cap(new[1], words[1][:1].isupper())
            else:
                del new[i]
            text = " ".join(new) + end
            if _norm(text) != _norm(sentence) and _norm(text) not in originals:
                return kind, text
    return None


def _cap(word: str, upper: bool) -> str:
    if not word:
        return word
    return (word[0].upper() if upper else word[0].lower()) + word[1:]


# ----------------------------------------------------------------------------- tasks


@dataclass
class TaskSet:
    """What :func:`build_task_data` made: per task its documents and YAML template."""

    docs: dict[str, list[dict]] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)
    extra: dict[str, dict] = field(default_factory=dict)


def eval_entries(
    entries: Sequence[DdtpEntry], valid_fraction: float = 0.05, eval_fraction: float = 0.10
) -> list[DdtpEntry]:
    """The descriptions of the evaluation packages (never in the instruction data)."""
    splits = assign_splits(entries, valid_fraction=valid_fraction, eval_fraction=eval_fraction)
    return [e for e in entries if splits[e.md5] == "eval"]


def _full_text(e: DdtpEntry) -> str:
    return e.short_da + ("\n\n" + e.long_da if e.long_da else "")


def ddtp_tasks(
    entries: Sequence[DdtpEntry],
    lang: str = "da",
    seed: int = 0,
    limit: int | None = 500,
    n_sections: int = 8,
    section_chars: int = 600,
) -> TaskSet:
    """The four DDTP tasks from the evaluation packages' descriptions.

    Args:
        entries: every DDTP pair (:func:`megatron_lang.data.ddtp.load_ddtp`); only the
            eval split is used (``entries`` may already be that split).
        lang: the translation language (prompts exist for ``da``, ``nb``, ``pl``).
        seed: the sampling and corruption seed.
        limit: documents per task (None: all).
        n_sections: the most common sections (over all entries) the section task
            chooses among.
        section_chars: the description text shown for the section task is cut here.
    """
    if lang not in PROMPTS:
        raise DownstreamDataError(f"no prompts for language {lang!r} (have {sorted(PROMPTS)})")
    held = eval_entries(entries)
    if not held:
        raise DownstreamDataError("no description falls in the eval split")
    rng = random.Random(seed)
    out = TaskSet()

    def take(docs: list[dict]) -> list[dict]:
        if limit is not None and len(docs) > limit:
            docs = rng.sample(docs, limit)
        return docs

    out.docs[f"{lang}_ddtp_bpb"] = take(
        [{"text": _full_text(e), "package": e.packages[0]} for e in held]
    )
    out.templates[f"{lang}_ddtp_bpb"] = "bpb.yaml"

    pairs = [
        {"en": e.short_en, "target": e.short_da, "package": e.packages[0]}
        for e in held
        if len(e.short_en.split()) >= 3 and _norm(e.short_en) != _norm(e.short_da)
    ]
    out.docs[f"{lang}_ddtp_translate"] = take(pairs)
    out.templates[f"{lang}_ddtp_translate"] = "translate.yaml"

    found = [(s, e.packages[0]) for e in held for s in sentences(e.long_da)]
    originals = {_norm(s) for s, _ in found}
    seen: set[str] = set()
    scala = []
    for s, pkg in found:
        if _norm(s) in seen:
            continue
        seen.add(_norm(s))
        bad = corrupt(s, rng, originals)
        if bad is not None:
            scala.append({"good": s, "bad": bad[1], "kind": bad[0], "package": pkg})
    out.docs[f"{lang}_scala_ddtp"] = take(scala)
    out.templates[f"{lang}_scala_ddtp"] = "acceptability.yaml"

    counts = Counter(e.section for e in entries if e.section)
    top = sorted(counts, key=lambda s: (-counts[s], s))[:n_sections]
    if len(top) < 2:
        raise DownstreamDataError("fewer than 2 Debian sections: the Packages lists are missing")
    choices = sorted(top)
    docs = [
        {
            "text": " ".join(_full_text(e).split())[:section_chars],
            "label": choices.index(e.section),
            "section": e.section,
            "choices": choices,
            "package": e.packages[0],
        }
        for e in held
        if e.section in top
    ]
    out.docs[f"{lang}_ddtp_section"] = take(docs)
    out.templates[f"{lang}_ddtp_section"] = "section.yaml"
    out.extra[f"{lang}_ddtp_section"] = {"sections": choices}
    return out


def text_tasks(texts: dict[str, Sequence[str]]) -> TaskSet:
    """``{name}_bpb`` from the user's held-out texts (one document per text)."""
    out = TaskSet()
    for name, docs in texts.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise DownstreamDataError(f"--text {name}=...: names are letters, digits, _ and -")
        kept = [{"text": t} for t in docs if t.strip()]
        if not kept:
            raise DownstreamDataError(f"--text {name}: no non-empty document")
        out.docs[f"{name}_bpb"] = kept
        out.templates[f"{name}_bpb"] = "bpb.yaml"
    return out


def merge(sets: Iterable[TaskSet]) -> TaskSet:
    out = TaskSet()
    for s in sets:
        for name in s.docs:
            if name in out.docs:
                raise DownstreamDataError(f"task {name} is defined twice")
        out.docs.update(s.docs)
        out.templates.update(s.templates)
        out.extra.update(s.extra)
    return out


def render_task(template: str, name: str, data_dir: Path, lang: str) -> str:
    """A task YAML from its template: the task name, its JSONL file, the prompts."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    prompts = PROMPTS.get(lang, PROMPTS["da"])
    text = text.replace("@NAME@", name).replace("@DATA@", str(data_dir / f"{name}.jsonl"))
    for key, value in prompts.items():
        text = text.replace(f"@PROMPT_{key.upper()}@", json.dumps(value, ensure_ascii=False))
    return text


def write_task_data(
    tasks: TaskSet,
    out_dir: str | os.PathLike,
    sources: Sequence[str],
    settings: dict,
    lang: str = "da",
    overwrite: bool = False,
) -> dict:
    """The folder lm-eval reads: ``<task>.jsonl``, ``tasks/<task>.yaml``, ``manifest.json``.

    Written to a temporary folder and renamed into place when complete."""
    out = Path(out_dir).resolve()
    manifest = {
        "format": "megatron_lang.downstream/1",
        "tasks": {
            n: {"documents": len(d), **tasks.extra.get(n, {})} for n, d in tasks.docs.items()
        },
        "sources": list(sources),
        "settings": settings,
        "licence": LICENCE_NOTE,
    }
    with atomic_output_dir(out, overwrite, error=DownstreamDataError) as tmp:
        (tmp / "tasks").mkdir()
        for name, docs in tasks.docs.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for d in docs:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
            yaml = render_task(tasks.templates[name], name, out, lang)
            (tmp / "tasks" / f"{name}.yaml").write_text(yaml, encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log.info("wrote %s: %s", out, ", ".join(f"{n} {len(d)}" for n, d in tasks.docs.items()))
    return manifest


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a task data folder (an error naming the folder when it is not one)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DownstreamDataError(
            f"{data_dir} is not a downstream task folder ({MANIFEST} is missing): build it "
            f"with tools/analysis/build_downstream_data.py"
        )
    return json.loads(path.read_text(encoding="utf-8"))
