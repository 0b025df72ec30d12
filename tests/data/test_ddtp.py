"""DDTP package descriptions -> Danish instruction data (synthetic deb822 files)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

from megatron_lang.data import ddtp
from megatron_lang.data.ddtp import (
    DdtpEntry,
    DdtpError,
    assign_splits,
    build_catalogue_instructions,
    build_instructions,
    load_ddtp,
    package_split,
    read_deb822,
    split_description,
    write_splits,
)
from tools.preprocess import build_ddtp_instructions

pytestmark = pytest.mark.unit

PREFIX = "deb.example.org_debian_dists_test_main_"
REAL_LISTS = Path("/var/lib/apt/lists")

TRANSLATION_DA = """\
Package: frobnicator
Description-md5: 0001
Description-da: Værktøj der frobnikerer filer
 Frobnicator frobnikerer alle slags filer
 på én gang.
 .
 Denne pakke indeholder programmet.

Package: frobnicator-doc
Description-md5: 0002
Description-da: Dokumentation til frobnicator
 Håndbogen i HTML.

Package: frobnicator-data
Description-md5: 0002
Description-da: Dokumentation til frobnicator
 Håndbogen i HTML.

# a comment
Package: orphan
Description-md5: 0003
Description-da: Oversat uden engelsk tekst
 Findes ikke på engelsk.
"""

TRANSLATION_EN = """\
Package: frobnicator
Description-md5: 0001
Description-en: tool that frobnicates files
 Frobnicator frobnicates all kinds of files
 at once.
 .
 This package contains the program.

Package: frobnicator-doc
Description-md5: 0002
Description-en: documentation for frobnicator
 The manual in HTML.

Package: untranslated
Description-md5: 0004
Description-en: nobody translated this
 Nothing.
"""

PACKAGES = """\
Package: frobnicator
Version: 1.0-1
Depends: libc6 (>= 2.34),
 libfrob1
Description: tool that frobnicates files
Description-md5: 0001
Section: contrib/utils

Package: frobnicator-doc
Description-md5: 0002
Section: non-free/doc
"""


def write_lists(folder: Path, da=TRANSLATION_DA, en=TRANSLATION_EN, packages=PACKAGES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PREFIX}i18n_Translation-da").write_text(da, encoding="utf-8")
    (folder / f"{PREFIX}i18n_Translation-en").write_text(en, encoding="utf-8")
    if packages is not None:
        with gzip.open(folder / f"{PREFIX}binary-amd64_Packages.gz", "wt") as f:
            f.write(packages)
    return folder


def synthetic_entries(n: int = 300) -> list[DdtpEntry]:
    """n invented packages; pkg0007 also has a second description (another arch)."""
    entries = [
        DdtpEntry(
            md5=f"{i:032x}",
            packages=[f"pkg{i:04d}"],
            section="games" if i % 3 else None,
            short_en=f"invented package {i}",
            long_en=f"Package {i} does things.\n\nIt is made up.",
            short_da=f"opdigtet pakke {i}",
            long_da=f"Pakke {i} gør ting.\n\nDen er opdigtet.",
        )
        for i in range(n)
    ]
    entries.append(DdtpEntry("f" * 32, ["pkg0007", "zzz-other"], "libs", "x", "y", "æ", "ø"))
    return entries


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- parsing


def test_read_deb822_multiline_and_filter(tmp_path):
    lists = write_lists(tmp_path / "lists")
    stanzas = list(read_deb822(lists / f"{PREFIX}i18n_Translation-da"))
    assert [s["Package"] for s in stanzas] == [
        "frobnicator",
        "frobnicator-doc",
        "frobnicator-data",
        "orphan",
    ]
    assert stanzas[0]["Description-da"] == (
        "Værktøj der frobnikerer filer\n Frobnicator frobnikerer alle slags filer\n"
        " på én gang.\n .\n Denne pakke indeholder programmet."
    )
    # gzip through apt-helper (or the fallback), other fields' continuations skipped
    pkgs = list(read_deb822(lists / f"{PREFIX}binary-amd64_Packages.gz", ("Package", "Section")))
    assert pkgs == [
        {"Package": "frobnicator", "Section": "contrib/utils"},
        {"Package": "frobnicator-doc", "Section": "non-free/doc"},
    ]


def test_read_deb822_fallback_without_apt_helper(tmp_path, monkeypatch):
    lists = write_lists(tmp_path / "lists")
    monkeypatch.setattr(ddtp, "APT_HELPER", str(tmp_path / "no-apt-helper"))
    pkgs = list(read_deb822(lists / f"{PREFIX}binary-amd64_Packages.gz", ("Package",)))
    assert [p["Package"] for p in pkgs] == ["frobnicator", "frobnicator-doc"]
    assert len(list(read_deb822(lists / f"{PREFIX}i18n_Translation-en"))) == 3


def test_read_deb822_bad_line_names_file_and_line(tmp_path):
    bad = tmp_path / "Translation-da"
    bad.write_text("Package: a\nDescription-md5: 1\nthis is not a field\n")
    with pytest.raises(DdtpError, match=r"Translation-da:3: expected 'Field: value'"):
        list(read_deb822(bad))
    bad.write_text(" continuation first\n")
    with pytest.raises(DdtpError, match=r":1: continuation line outside a field"):
        list(read_deb822(bad))


def test_split_description_paragraphs():
    value = "Kort tekst \n Første linje\n anden linje.\n .\n  kode med indrykning\n .\n Slut.\n ."
    short, long = split_description(value)
    assert short == "Kort tekst"
    assert long == "Første linje\nanden linje.\n\n kode med indrykning\n\nSlut."
    assert split_description("Kun kort") == ("Kun kort", "")


# ----------------------------------------------------------------------------- loading


def test_load_ddtp_aligns_by_md5_with_sections(tmp_path):
    entries = load_ddtp(write_lists(tmp_path / "lists"))
    by_md5 = {e.md5: e for e in entries}
    assert set(by_md5) == {"0001", "0002"}  # 0003 lacks English, 0004 Danish
    first = by_md5["0001"]
    assert first.packages == ["frobnicator"]
    assert first.section == "utils"  # contrib/ prefix stripped
    assert first.short_en == "tool that frobnicates files"
    assert first.short_da == "Værktøj der frobnikerer filer"
    assert first.long_da == (
        "Frobnicator frobnikerer alle slags filer\npå én gang.\n\n"
        "Denne pakke indeholder programmet."
    )
    assert first.long_en.endswith("\n\nThis package contains the program.")
    shared = by_md5["0002"]
    assert shared.packages == ["frobnicator-data", "frobnicator-doc"]  # one pair, both names
    assert shared.section == "doc"  # from frobnicator-doc; non-free/ stripped
    assert [e.md5 for e in entries] == ["0001", "0002"]  # sorted by first package


def test_load_ddtp_without_packages_files_has_no_sections(tmp_path):
    entries = load_ddtp(write_lists(tmp_path / "lists", packages=None))
    assert len(entries) == 2 and all(e.section is None for e in entries)


def test_missing_translations_error_names_folder_and_command(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DdtpError) as exc:
        load_ddtp(empty)
    msg = str(exc.value)
    assert str(empty) in msg and "Translation-da" in msg
    assert "apt-get update -o Acquire::Languages=da,en" in msg
    with pytest.raises(DdtpError, match="does not exist.*apt-get update"):
        load_ddtp(tmp_path / "nowhere")
    (empty / f"{PREFIX}i18n_Translation-da").write_text(TRANSLATION_DA)
    with pytest.raises(DdtpError, match="Translation-en"):
        load_ddtp(empty)


# ----------------------------------------------------------------------------- splits


def test_package_split_is_stable_and_sized():
    # fixed values: the rule is shared with other tools and must never change
    assert [package_split(n) for n in ("bash", "vim", "pkg0009", "pkg0039")] == [
        "train",
        "eval",
        "valid",
        "eval",
    ]
    names = [f"name-{i}" for i in range(20000)]
    splits = [package_split(n) for n in names]
    assert abs(splits.count("eval") / 20000 - 0.10) < 0.01
    assert abs(splits.count("valid") / 20000 - 0.05) < 0.01
    # eval depends only on eval_fraction
    other = [package_split(n, valid_fraction=0.2) for n in names]
    assert [s == "eval" for s in other] == [s == "eval" for s in splits]
    assert all(package_split(n, 0.0, 0.0) == "train" for n in names[:100])
    with pytest.raises(DdtpError, match="< 1"):
        package_split("x", 0.6, 0.5)
    with pytest.raises(DdtpError, match=r"\[0, 1\)"):
        package_split("x", -0.1)


def test_assign_splits_follows_first_package_and_links():
    entries = synthetic_entries()
    splits = assign_splits(entries)
    for e in entries[:-1]:
        assert splits[e.md5] == package_split(e.packages[0])
    # pkg0007 has two descriptions: both on the same side
    assert splits["f" * 32] == splits[f"{7:032x}"] == package_split("pkg0007")
    # linking across entries: b's first package is linked through "shared" to "a"
    linked = [
        DdtpEntry("1", ["a", "shared"], None, "x", "", "x", ""),
        DdtpEntry("2", ["b", "shared"], None, "x", "", "x", ""),
    ]
    assert ddtp.split_keys(linked) == {"1": "a", "2": "a"}


# ----------------------------------------------------------------------------- records


def test_build_instructions_records():
    entries = synthetic_entries(30)
    records = list(build_instructions(entries, include_eval=True))
    first = [r for r in records if r["package"] == "pkg0000"]
    assert [r["task"] for r in first] == ["describe", "translate", "summarise"]  # no section
    describe, translate, summarise = first
    assert describe["messages"][0]["role"] == "user"
    assert "pkg0000" in describe["messages"][0]["content"]
    assert describe["messages"][1] == {
        "role": "assistant",
        "content": "opdigtet pakke 0\n\nPakke 0 gør ting.\n\nDen er opdigtet.",
    }
    assert translate["messages"][0]["content"].endswith(
        "invented package 0\n\nPackage 0 does things.\n\nIt is made up."
    )
    assert summarise["messages"][1]["content"] == "opdigtet pakke 0"
    section = next(r for r in records if r["package"] == "pkg0001" and r["task"] == "section")
    assert section["messages"][1]["content"] == "games"
    assert "pkg0001" in section["messages"][0]["content"]
    # deterministic per seed; the seed changes some wording, not the content
    again = list(build_instructions(entries, include_eval=True))
    assert again == records
    other = list(build_instructions(entries, seed=1, include_eval=True))
    assert [r["messages"][1] for r in other] == [r["messages"][1] for r in records]
    assert [r["messages"][0] for r in other] != [r["messages"][0] for r in records]
    # eval packages are left out by default; only the chosen tasks
    default = list(build_instructions(entries, tasks=("summarise",)))
    assert {r["split"] for r in default} <= {"train", "valid"}
    assert {r["task"] for r in default} == {"summarise"}
    with pytest.raises(DdtpError, match="unknown task"):
        list(build_instructions(entries, tasks=("poetry",)))


def test_build_instructions_skips_empty_texts():
    entries = [
        DdtpEntry("1", ["a"], "libs", "", "", "kort", "lang"),  # no English
        DdtpEntry("2", ["b"], "libs", "short", "long", "", ""),  # no Danish
        DdtpEntry("3", ["c"], "libs", "short", "", "kort", ""),  # short only
    ]
    records = list(build_instructions(entries, include_eval=True))
    assert {(r["package"], r["task"]) for r in records} == {("c", "translate"), ("c", "section")}


def test_write_splits_disjoint_by_package_without_eval(tmp_path):
    entries = synthetic_entries()
    splits = assign_splits(entries)
    records = build_instructions(entries, include_eval=True)
    manifest = write_splits(records, tmp_path / "out", sources=["a", "b"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train.jsonl", "valid.jsonl"]
    side_of = {p: splits[e.md5] for e in entries for p in e.packages}
    eval_packages = {p for p, s in side_of.items() if s == "eval"}
    assert eval_packages  # the test covers something
    seen: dict[str, str] = {}
    for split in ("train", "valid"):
        rows = read_jsonl(out / f"{split}.jsonl")
        assert len(rows) == manifest["counts"][split]["total"] > 0
        for r in rows:
            assert set(r) == {"messages", "package", "task"}
            assert seen.setdefault(r["package"], split) == split  # one side per package
            assert side_of[r["package"]] == split
            text = json.dumps(r, ensure_ascii=False)
            for p in eval_packages:
                if p.startswith("pkg"):
                    assert f"Pakke {int(p[3:])} gør" not in text
    assert manifest["eval_records_dropped"] > 0
    assert manifest["sources"] == ["a", "b"] and "licence" in manifest["licence"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # the same package always lands on the same side, whatever the seed
    write_splits(build_instructions(entries, seed=5), tmp_path / "out2")
    for split in ("train", "valid"):
        for r in read_jsonl(tmp_path / "out2" / f"{split}.jsonl"):
            assert side_of[r["package"]] == split
            assert seen.get(r["package"], split) == split


def test_write_splits_is_atomic(tmp_path):
    def failing():
        yield from build_instructions(synthetic_entries(20))
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_splits(failing(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    write_splits(build_instructions(synthetic_entries(20)), tmp_path / "out")
    with pytest.raises(DdtpError, match="already exists"):
        write_splits([], tmp_path / "out")
    with pytest.raises(DdtpError, match="unknown split"):
        write_splits([{"package": "a", "split": "test"}], tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "train.jsonl").stat().st_size > 0  # the old output is kept


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo file (no hash table)."""
    keys = sorted(messages)
    ids = [k.encode() for k in keys]
    strs = [messages[k].encode() for k in keys]
    n = len(keys)
    start = 28 + 16 * n
    table_ids, table_strs, blob = [], [], b""
    for s in ids:
        table_ids.append((len(s), start + len(blob)))
        blob += s + b"\0"
    for s in strs:
        table_strs.append((len(s), start + len(blob)))
        blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    tables = b"".join(struct.pack("<2I", *t) for t in table_ids + table_strs)
    path.write_bytes(head + tables + blob)


def test_catalogue_instructions(tmp_path):
    header = "Content-Type: text/plain; charset=UTF-8\n"
    folder = tmp_path / "LC_MESSAGES"
    folder.mkdir()
    for domain in ("pkg0000", "pkg0039"):  # train, eval
        write_mo(
            folder / f"{domain}.mo",
            {"": header, "Open file": "Åbn fil", "OK": "OK", "%d": "%d", "menu\x04Quit": "Afslut"},
        )
    records = list(build_catalogue_instructions(folder, include_eval=True))
    assert [(r["package"], r["split"], r["messages"][1]["content"]) for r in records] == [
        ("pkg0000", "train", "Åbn fil"),
        ("pkg0000", "train", "Afslut"),
        ("pkg0039", "eval", "Åbn fil"),
        ("pkg0039", "eval", "Afslut"),
    ]
    assert records[0]["messages"][0]["content"].endswith("\n\nOpen file")
    assert records[0]["task"] == "translate_ui"
    assert [r["package"] for r in build_catalogue_instructions(folder)] == ["pkg0000"] * 2
    with pytest.raises(DdtpError, match="no \\*.mo"):
        list(build_catalogue_instructions(tmp_path))


# ----------------------------------------------------------------------------- CLI


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        build_ddtp_instructions.main(["--help"])
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
    lists = write_lists(tmp_path / "lists")
    out = tmp_path / "out"
    argv = ["--lists-dir", str(lists), "--output", str(out), "--tasks", "describe", "section"]
    assert build_ddtp_instructions.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 descriptions" in printed and "train.jsonl" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"] == ["describe", "section"]
    assert any(s.endswith("Translation-da") for s in manifest["sources"])
    assert build_ddtp_instructions.main(argv) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    # --limit and UI strings from a catalogue folder
    folder = tmp_path / "LC_MESSAGES"
    folder.mkdir()
    write_mo(
        folder / "pkg0000.mo",
        {"": "Content-Type: text/plain; charset=UTF-8\n", "Open file": "Åbn fil", "Save": "Gem"},
    )
    small = tmp_path / "small"
    argv = [
        "--lists-dir",
        str(lists),
        "--output",
        str(small),
        "--limit",
        "1",
        "--tasks",
        "describe",
        "translate",
        "--locale-dir",
        str(folder),
    ]
    assert build_ddtp_instructions.main(argv) == 0
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["limit"] == 1 and sum(manifest["descriptions"].values()) == 1
    ui = [r for r in read_jsonl(small / "train.jsonl") if r["task"] == "translate_ui"]
    assert [r["messages"][1]["content"] for r in ui] == ["Åbn fil"]  # --limit 1 UI string
    assert any(s.endswith("pkg0000.mo") for s in manifest["sources"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_ddtp_instructions.main(["--lists-dir", str(empty), "--output", str(out)]) == 2
    assert "apt-get update" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real lists


def test_real_apt_lists(capsys):
    if not list(REAL_LISTS.glob("*_i18n_Translation-da*")):
        with capsys.disabled():
            print(
                "\nno Danish DDTP translations in /var/lib/apt/lists: create them with "
                "'sudo apt-get update -o Acquire::Languages=da,en'"
            )
        pytest.skip(
            "no Translation-da files in /var/lib/apt/lists (apt-get update -o "
            "Acquire::Languages=da,en)"
        )
    entries = load_ddtp(REAL_LISTS)
    assert len(entries) > 40_000
    assert sum(e.section is not None for e in entries) > 0.9 * len(entries)
    assert len({e.md5 for e in entries}) == len(entries)
    assert all(e.short_da and e.short_en and e.packages == sorted(e.packages) for e in entries)
    assert not any("/" in e.section for e in entries if e.section)
    splits = assign_splits(entries)
    side: dict[str, str] = {}
    for e in entries:
        for p in e.packages:
            assert side.setdefault(p, splits[e.md5]) == splits[e.md5]
