"""Danish instruction data from Debian's translated package descriptions (DDTP).

The Debian Description Translation Project (DDTP, https://ddtp.debian.org/) has
people translate package descriptions; apt downloads them as
``/var/lib/apt/lists/*_i18n_Translation-<lang>*`` when asked to::

    sudo apt-get update -o Acquire::Languages=da,en

Each stanza of a ``Translation-<lang>`` file names a ``Package``, the
``Description-md5`` of its English description and ``Description-<lang>``: the
first line is the short description, the continuation lines the long one (a line
``" ."`` is a paragraph break).  English and Danish align by ``Description-md5``;
several packages can share one description (one :class:`DdtpEntry` per md5 lists
them all), and one package can have several (per-architecture descriptions).  The
``Section`` comes from the ``*_Packages`` files next to them.

:func:`build_instructions` turns the entries into chat conversations in the OpenAI
``messages`` format (Danish prompts, Danish answers); :func:`write_splits` writes
``train.jsonl``, ``valid.jsonl`` and ``manifest.json``.

The split (shared with other tools, e.g. a later evaluation tool)
    :func:`package_split` maps a package name to ``"train"``, ``"valid"`` or
    ``"eval"`` from a SHA-256 of the name (stable across runs, machines and Python
    versions).  An entry's split is that of its first package (sorted names);
    entries linked by a shared package (one package with several descriptions) all
    take the split of the smallest package name among them, so no package is on
    two sides (:func:`assign_splits`; the two rules agree unless packages are
    linked that way).  ``"eval"`` is reserved for evaluation: those packages are
    never written into instruction data.  The eval set depends only on
    ``eval_fraction``: changing ``valid_fraction`` moves packages between train
    and valid, never into or out of eval.

The text is built on the user's machine from their apt lists; nothing of it is
stored in this repository.  Each package's licence applies to its description.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from megatron_lang.platform.files import atomic_output_dir
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

APT_LISTS_DIR = Path("/var/lib/apt/lists")
"""Where apt keeps the downloaded package lists."""

LOCALE_DIR = Path("/usr/share/locale")
"""Where installed packages put their message catalogues (``<lang>/LC_MESSAGES/*.mo``)."""

APT_HELPER = "/usr/lib/apt/apt-helper"
"""apt's helper; ``apt-helper cat-file FILE`` decompresses any of apt's compressions."""

TASKS = ("describe", "translate", "section", "summarise")
"""The instruction tasks made from DDTP entries."""

CATALOGUE_TASK = "translate_ui"
"""The task of the records made from message catalogues."""

SPLITS = ("train", "valid", "eval")
WRITTEN_SPLITS = ("train", "valid")

LICENCE_NOTE = (
    "The texts are Debian package descriptions and their translations by the Debian "
    "Description Translation Project (DDTP), taken from the apt lists of the machine "
    "that built this folder (UI strings, if any, from the installed packages' message "
    "catalogues). They are not licensed as a whole: each package's licence (see its "
    "copyright file, /usr/share/doc/<package>/copyright) applies to its description "
    "and strings. Check them before redistributing this data."
)

_COMPRESSIONS = ("lz4", "gz", "xz", "lzma", "bz2", "zst")
_EXT = r"(?:\.(?:" + "|".join(_COMPRESSIONS) + r"))?"
_PACKAGES_RE = re.compile(r"_binary-[^_]+_Packages" + _EXT + r"$")


class DdtpError(ValueError):
    """Bad or missing input (the message names the folder, file or line)."""


def _apt_command(lang: str) -> str:
    langs = lang if lang == "en" else f"{lang},en"
    return f"sudo apt-get update -o Acquire::Languages={langs}"


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path) -> Iterator[str]:
    """The lines of an apt list file, decompressed (apt-helper, else by suffix)."""
    if os.access(APT_HELPER, os.X_OK):
        yield from _command_lines([APT_HELPER, "cat-file", str(path)], path)
        return
    suffix = path.suffix.lstrip(".")
    if suffix == "gz":
        opener = gzip.open
    elif suffix in ("xz", "lzma"):
        opener = lzma.open
    elif suffix == "bz2":
        opener = bz2.open
    elif suffix in ("lz4", "zst"):
        tool = "lz4cat" if suffix == "lz4" else "zstdcat"
        exe = shutil.which(tool)
        if exe is None:
            raise DdtpError(
                f"{path}: cannot decompress .{suffix}: neither {APT_HELPER} nor {tool} "
                f"is installed (apt-get install {'lz4' if suffix == 'lz4' else 'zstd'})"
            )
        yield from _command_lines([exe, str(path)], path)
        return
    else:
        opener = open  # type: ignore[assignment]
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        yield from f


def _command_lines(cmd: list[str], path: Path) -> Iterator[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    finished = False
    try:
        yield from io.TextIOWrapper(proc.stdout, encoding="utf-8")
        finished = True
    finally:
        if not finished:  # the caller stopped early or decoding failed
            proc.kill()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        rc = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if rc != 0:
        raise DdtpError(f"{path}: {' '.join(cmd[:-1])} failed (exit {rc}): {err}")


def read_deb822(path: str | os.PathLike, fields: Iterable[str] | None = None) -> Iterator[dict]:
    """The stanzas of a deb822 file (plain or compressed) as dicts.

    A multi-line field's value is its first line (stripped) followed by its
    continuation lines as they are (leading space kept, trailing newline removed),
    joined with ``"\\n"``; :func:`split_description` turns a description into text.

    Args:
        path: the file (``.lz4``, ``.gz``, ``.xz``, ``.bz2``, ``.zst`` or plain).
        fields: keep only these fields (faster on big files); all when None.

    Raises:
        DdtpError: a line that is neither ``Field: value``, a continuation line, a
            comment nor blank (the message names the file and line), or a file that
            cannot be decompressed or is not UTF-8.
    """
    path = Path(path)
    wanted = None if fields is None else frozenset(fields)
    stanza: dict[str, str] = {}
    key: str | None = None  # the field continuation lines belong to (None: skipped)
    in_field = False
    lineno = 0
    try:
        for lineno, raw in enumerate(_open_text(path), 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if stanza:
                    yield stanza
                stanza, key, in_field = {}, None, False
                continue
            first = line[0]
            if first == " " or first == "\t":
                if not in_field:
                    raise DdtpError(f"{path}:{lineno}: continuation line outside a field")
                if key is not None:
                    stanza[key] += "\n" + line
                continue
            if first == "#":
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or " " in name:
                raise DdtpError(f"{path}:{lineno}: expected 'Field: value', got {line[:60]!r}")
            in_field = True
            if wanted is None or name in wanted:
                key = name
                stanza[name] = value.strip()
            else:
                key = None
    except UnicodeDecodeError as err:
        raise DdtpError(f"{path}: not UTF-8 after line {lineno}: {err}") from None
    if stanza:
        yield stanza


def split_description(value: str) -> tuple[str, str]:
    """A ``Description`` value → (short description, long description as text).

    Continuation lines lose their one leading space, a line ``" ."`` becomes a
    blank line (a paragraph break); leading and trailing blank lines are dropped.
    """
    short, _, rest = value.partition("\n")
    lines = []
    for line in rest.split("\n") if rest else ():
        body = line[1:] if line[:1] in (" ", "\t") else line
        lines.append("" if body.strip() == "." else body.rstrip())
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return short.strip(), "\n".join(lines)


def bare_section(section: str | None) -> str | None:
    """``"contrib/games"`` → ``"games"`` (the archive-area prefix dropped); None stays None."""
    if section is None or not section.strip():
        return None
    return section.strip().rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- entries


@dataclass
class DdtpEntry:
    """One English description and its translation (``*_da`` hold the ``lang`` text)."""

    md5: str
    packages: list[str]
    section: str | None
    short_en: str
    long_en: str
    short_da: str
    long_da: str


@dataclass
class DdtpSources:
    """The apt list files :func:`load_ddtp` reads."""

    translations: list[Path]
    english: list[Path]
    packages: list[Path] = field(default_factory=list)

    def all(self) -> list[str]:
        return [str(p) for p in (*self.translations, *self.english, *self.packages)]


def find_sources(lists_dir: str | os.PathLike = APT_LISTS_DIR, lang: str = "da") -> DdtpSources:
    """The ``Translation-<lang>``, ``Translation-en`` and ``Packages`` files in ``lists_dir``.

    Raises:
        DdtpError: no ``Translation-<lang>`` or ``Translation-en`` file (the message
            names the folder and the apt-get command that downloads them).
    """
    folder = Path(lists_dir)
    if not folder.is_dir():
        raise DdtpError(
            f"apt lists folder {folder} does not exist; download the translations with "
            f"'{_apt_command(lang)}'"
        )

    def matching(pattern: re.Pattern) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and pattern.search(p.name))

    def translations(code: str) -> list[Path]:
        return matching(re.compile(r"_i18n_Translation-" + re.escape(code) + _EXT + "$"))

    found = DdtpSources(translations(lang), translations("en"), matching(_PACKAGES_RE))
    for code, files in ((lang, found.translations), ("en", found.english)):
        if not files:
            raise DdtpError(
                f"no *_i18n_Translation-{code} files in {folder}; download them with "
                f"'{_apt_command(lang)}'"
            )
    if not found.packages:
        logger.warning("no *_Packages files in %s: sections will be unknown", folder)
    return found


def load_ddtp(lists_dir: str | os.PathLike = APT_LISTS_DIR, lang: str = "da") -> list[DdtpEntry]:
    """English/``lang`` description pairs from the apt lists, one per ``Description-md5``.

    Entries are sorted by (first package, md5).  ``section`` is that of the first
    package (sorted) that has one in the ``Packages`` files, without an archive-area
    prefix (``contrib/games`` → ``games``), else that listed for the md5, else None.
    Pairs whose English or ``lang`` text is missing are dropped.

    Raises:
        DdtpError: see :func:`find_sources` and :func:`read_deb822`.
    """
    src = find_sources(lists_dir, lang)
    field_da = f"Description-{lang}"
    translated: dict[str, tuple[str, str]] = {}
    packages: dict[str, set[str]] = {}
    for path in src.translations:
        for st in read_deb822(path, ("Package", "Description-md5", field_da)):
            md5, text = st.get("Description-md5"), st.get(field_da)
            if not md5 or text is None:
                continue
            translated.setdefault(md5, split_description(text))
            if "Package" in st:
                packages.setdefault(md5, set()).add(st["Package"])
    english: dict[str, tuple[str, str]] = {}
    for path in src.english:
        for st in read_deb822(path, ("Package", "Description-md5", "Description-en")):
            md5, text = st.get("Description-md5"), st.get("Description-en")
            if md5 in translated and text is not None:
                english.setdefault(md5, split_description(text))
                if "Package" in st:
                    packages[md5].add(st["Package"])
    section_of_package: dict[str, str] = {}
    section_of_md5: dict[str, str] = {}
    for path in src.packages:
        for st in read_deb822(path, ("Package", "Section", "Description-md5")):
            section = bare_section(st.get("Section"))
            if section is None:
                continue
            if "Package" in st:
                section_of_package.setdefault(st["Package"], section)
            if st.get("Description-md5"):
                section_of_md5.setdefault(st["Description-md5"], section)
    entries = []
    missing_en = 0
    for md5, (short_da, long_da) in translated.items():
        if md5 not in english:
            missing_en += 1
            continue
        short_en, long_en = english[md5]
        names = sorted(packages.get(md5, ()))
        if not names:
            continue
        section = next((section_of_package[n] for n in names if n in section_of_package), None)
        if section is None:
            section = section_of_md5.get(md5)
        entries.append(DdtpEntry(md5, names, section, short_en, long_en, short_da, long_da))
    entries.sort(key=lambda e: (e.packages[0], e.md5))
    logger.info(
        "DDTP: %d %s/en pairs from %s (%d translations without English text, "
        "%d pairs without a section)",
        len(entries),
        lang,
        lists_dir,
        missing_en,
        sum(e.section is None for e in entries),
    )
    return entries


# ----------------------------------------------------------------------------- splits


def _check_fractions(valid_fraction: float, eval_fraction: float) -> None:
    if not (0 <= valid_fraction < 1 and 0 <= eval_fraction < 1):
        raise DdtpError(
            f"fractions must be in [0, 1): valid {valid_fraction}, eval {eval_fraction}"
        )
    if valid_fraction + eval_fraction >= 1:
        raise DdtpError(
            f"valid_fraction + eval_fraction must be < 1 (got {valid_fraction} + {eval_fraction})"
        )


def package_split(name: str, valid_fraction: float = 0.05, eval_fraction: float = 0.10) -> str:
    """``"train"``, ``"valid"`` or ``"eval"`` for a package name; stable everywhere.

    The first 8 bytes of SHA-256 of the UTF-8 name, as a number in [0, 1): below
    ``eval_fraction`` is eval, below ``eval_fraction + valid_fraction`` valid, the
    rest train.  So the eval set depends on ``eval_fraction`` only.
    """
    _check_fractions(valid_fraction, eval_fraction)
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < eval_fraction:
        return "eval"
    if u < eval_fraction + valid_fraction:
        return "valid"
    return "train"


def split_keys(entries: Iterable[DdtpEntry]) -> dict[str, str]:
    """md5 → the package name that decides the entry's split.

    The smallest package name among the entries linked to it by shared packages
    (usually just its first package).
    """
    entries = list(entries)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in entries:
        roots = [find(p) for p in e.packages]
        top = min(roots)
        for r in roots:
            parent[r] = top
    return {e.md5: find(e.packages[0]) for e in entries}


def assign_splits(
    entries: Iterable[DdtpEntry], valid_fraction: float = 0.05, eval_fraction: float = 0.10
) -> dict[str, str]:
    """md5 → ``"train"`` / ``"valid"`` / ``"eval"`` (see the module docstring)."""
    return {
        md5: package_split(key, valid_fraction, eval_fraction)
        for md5, key in split_keys(entries).items()
    }


# ----------------------------------------------------------------------------- records

_DESCRIBE = (
    "Beskriv Debian-pakken {pkg}.",
    "Hvad er Debian-pakken {pkg}?",
    "Hvad indeholder pakken {pkg} i Debian?",
    "Giv en beskrivelse af Debian-pakken {pkg}.",
)
_TRANSLATE = (
    "Oversæt denne pakkebeskrivelse fra engelsk til dansk:\n\n{text}",
    "Oversæt følgende beskrivelse af en Debian-pakke til dansk:\n\n{text}",
    "Her er en engelsk beskrivelse af en softwarepakke. Oversæt den til dansk.\n\n{text}",
)
_SECTION = (
    "Hvilken Debian-sektion hører pakken {pkg} til? Svar kun med sektionens navn.\n\n{text}",
    "Pakken {pkg} beskrives sådan:\n\n{text}\n\nHvilken sektion i Debian hører den til? "
    "Svar kun med sektionens navn.",
    "I hvilken Debian-sektion ligger pakken {pkg}? Her er dens beskrivelse:\n\n{text}\n\n"
    "Svar med sektionens navn alene.",
)
_SUMMARISE = (
    "Skriv en kort beskrivelse på én linje af denne pakke:\n\n{text}",
    "Opsummer denne pakkebeskrivelse i én kort linje:\n\n{text}",
    "Giv en kort titel, der beskriver pakken ud fra denne tekst:\n\n{text}",
)
_TRANSLATE_UI = (
    "Oversæt denne tekst fra en brugerflade fra engelsk til dansk:\n\n{text}",
    "Hvordan oversættes denne tekst fra et program til dansk?\n\n{text}",
    "Oversæt til dansk (tekst fra en brugerflade):\n\n{text}",
)


def _full(short: str, long: str) -> str:
    return f"{short}\n\n{long}" if long else short


def _record(prompt: str, answer: str, package: str, task: str, split: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "package": package,
        "task": task,
        "split": split,
    }


def build_instructions(
    entries: Iterable[DdtpEntry],
    tasks: Iterable[str] = TASKS,
    seed: int = 0,
    valid_fraction: float = 0.05,
    eval_fraction: float = 0.10,
    include_eval: bool = False,
) -> Iterator[dict]:
    """Chat records (OpenAI ``messages``) from DDTP entries, deterministic for a seed.

    Tasks (a record per entry and task, when the texts it needs are not empty):

    ``describe``  "Beskriv Debian-pakken {pkg}." → the Danish short description, a
                  blank line, the Danish long description;
    ``translate`` "Oversæt denne pakkebeskrivelse fra engelsk til dansk: ..." (short
                  and long English) → the Danish text in the same layout;
    ``section``   the package and its Danish description → the section name (only
                  when the section is known);
    ``summarise`` the Danish long description → the Danish short description.

    The prompt wording is one of a few variants, picked by a RNG seeded from
    ``seed``, the md5 and the task; the package named in prompts is one of the
    entry's packages, picked the same way.  Each record is ``{"messages": [user,
    assistant], "package", "task", "split"}``; ``split`` comes from
    :func:`assign_splits`.  Eval entries are left out unless ``include_eval``.

    Raises:
        DdtpError: an unknown task or bad fractions.
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DdtpError(f"unknown task(s) {', '.join(unknown)} (known: {', '.join(TASKS)})")
    entries = list(entries)
    splits = assign_splits(entries, valid_fraction, eval_fraction)
    for e in entries:
        split = splits[e.md5]
        if split == "eval" and not include_eval:
            continue
        if not (e.short_da.strip() and e.short_en.strip()):
            continue
        danish = _full(e.short_da, e.long_da)
        for task in tasks:
            rng = random.Random(f"{seed}:{e.md5}:{task}")
            pkg = rng.choice(e.packages)
            if task == "describe":
                if not e.long_da:
                    continue
                prompt = rng.choice(_DESCRIBE).format(pkg=pkg)
                answer = danish
            elif task == "translate":
                if bool(e.long_en) != bool(e.long_da):
                    continue  # one side lacks the long description
                prompt = rng.choice(_TRANSLATE).format(text=_full(e.short_en, e.long_en))
                answer = danish
            elif task == "section":
                if e.section is None:
                    continue
                prompt = rng.choice(_SECTION).format(pkg=pkg, text=danish)
                answer = e.section
            else:  # summarise
                if not e.long_da:
                    continue
                prompt = rng.choice(_SUMMARISE).format(text=e.long_da)
                answer = e.short_da
            yield _record(prompt, answer, pkg, task, split)


def read_catalogue(path: str | os.PathLike) -> dict[str, str]:
    """English → translated strings of a ``.mo`` file (header, plurals' other forms,
    untranslated and identical strings and strings without letters left out;
    a message context is dropped)."""
    import gettext

    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError) as err:
        raise DdtpError(f"{path}: cannot read the message catalogue: {err}") from None
    out: dict[str, str] = {}
    for key, value in catalog.items():
        if isinstance(key, tuple):
            if key[1] != 0:
                continue
            key = key[0]
        key = key.rpartition("\x04")[2]  # "context\x04msgid"
        value = str(value)
        if not key.strip() or not value.strip() or key == value:
            continue
        if not any(c.isalpha() for c in key):
            continue
        out.setdefault(key, value)
    return out


def build_catalogue_instructions(
    locale_dir: str | os.PathLike = LOCALE_DIR / "da" / "LC_MESSAGES",
    seed: int = 0,
    valid_fraction: float = 0.05,
    eval_fraction: float = 0.10,
    include_eval: bool = False,
) -> Iterator[dict]:
    """``translate_ui`` records from the ``*.mo`` files in ``locale_dir``.

    "Oversæt denne tekst fra en brugerflade fra engelsk til dansk: ..." → the
    catalogue's translation.  ``package`` is the catalogue's domain (the file name
    without ``.mo``), split with :func:`package_split`.

    Raises:
        DdtpError: no ``.mo`` files in ``locale_dir``, or one that cannot be read.
    """
    folder = Path(locale_dir)
    files = sorted(folder.glob("*.mo")) if folder.is_dir() else []
    if not files:
        raise DdtpError(
            f"no *.mo message catalogues in {folder} (installed packages put them in "
            f"/usr/share/locale/<lang>/LC_MESSAGES/)"
        )
    for path in files:
        domain = path.stem
        split = package_split(domain, valid_fraction, eval_fraction)
        if split == "eval" and not include_eval:
            continue
        for msgid, msgstr in sorted(read_catalogue(path).items()):
            rng = random.Random(f"{seed}:{domain}:{msgid}")
            prompt = rng.choice(_TRANSLATE_UI).format(text=msgid)
            yield _record(prompt, msgstr, domain, CATALOGUE_TASK, split)


def catalogue_files(locale_dir: str | os.PathLike) -> list[str]:
    """The ``.mo`` files :func:`build_catalogue_instructions` reads."""
    return [str(p) for p in sorted(Path(locale_dir).glob("*.mo"))]


# ----------------------------------------------------------------------------- writing


def write_splits(
    records: Iterable[dict],
    out_dir: str | os.PathLike,
    sources: Iterable[str] = (),
    extra: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``train.jsonl``, ``valid.jsonl`` and ``manifest.json`` into ``out_dir``.

    A record goes to the file of its ``split`` key (or, without one, of
    :func:`package_split` of its ``package`` with the default fractions); the
    ``split`` key itself is not written.  Eval records are never written: they are
    only counted (``manifest["eval_records_dropped"]``).  The folder appears only
    when complete (:func:`~megatron_lang.platform.files.atomic_output_dir`).

    Args:
        records: from :func:`build_instructions` / :func:`build_catalogue_instructions`.
        out_dir: the folder to create.
        sources: the input files, listed in the manifest.
        extra: more manifest keys (e.g. the split settings).
        overwrite: replace an existing ``out_dir``.

    Returns:
        The manifest: ``counts[split][task]`` and ``counts[split]["total"]``, the
        number of distinct packages per split, sources and the licence note.

    Raises:
        DdtpError: ``out_dir`` exists (without ``overwrite``), or a record has an
            unknown split.
    """
    counts = {s: Counter() for s in WRITTEN_SPLITS}
    packages: dict[str, set[str]] = {s: set() for s in WRITTEN_SPLITS}
    dropped = 0
    with atomic_output_dir(out_dir, overwrite=overwrite, error=DdtpError) as tmp:
        files = {s: open(tmp / f"{s}.jsonl", "w", encoding="utf-8") for s in WRITTEN_SPLITS}
        try:
            for rec in records:
                rec = dict(rec)
                split = rec.pop("split", None) or package_split(str(rec.get("package", "")))
                if split == "eval":
                    dropped += 1
                    continue
                if split not in files:
                    raise DdtpError(f"record for {rec.get('package')!r}: unknown split {split!r}")
                files[split].write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts[split][rec.get("task", "")] += 1
                packages[split].add(rec.get("package", ""))
        finally:
            for f in files.values():
                f.close()
        manifest = {
            "format": "messages",
            "files": {s: f"{s}.jsonl" for s in WRITTEN_SPLITS},
            "counts": {
                s: {"total": sum(counts[s].values()), **dict(sorted(counts[s].items()))}
                for s in WRITTEN_SPLITS
            },
            "packages": {s: len(packages[s]) for s in WRITTEN_SPLITS},
            "eval_records_dropped": dropped,
            "split_rule": (
                "by package name: megatron_lang.data.ddtp.package_split (SHA-256 of the "
                "name); an entry follows its first package (assign_splits); 'eval' "
                "packages are reserved for evaluation and not written here"
            ),
            **(extra or {}),
            "sources": list(sources),
            "licence": LICENCE_NOTE,
        }
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    logger.info(
        "wrote %s: train %d, valid %d records (%d eval records held back)",
        out_dir,
        manifest["counts"]["train"]["total"],
        manifest["counts"]["valid"]["total"],
        dropped,
    )
    return manifest
