"""Downstream task data: invariants of each builder on real Danish text, the folder lm-eval reads."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from megatron_lang.data.ddtp import APT_LISTS_DIR, DdtpEntry, assign_splits, build_instructions
from megatron_lang.downstream.data import (
    DownstreamDataError,
    TaskSet,
    corrupt,
    ddtp_tasks,
    merge,
    read_manifest,
    sentences,
    text_tasks,
    write_task_data,
)

pytestmark = pytest.mark.unit

SECTIONS = ["admin", "devel", "doc", "games", "graphics", "libs", "net", "utils", "x11", "web"]


@pytest.fixture(scope="module")
def danish_entries(gimp_texts) -> list[DdtpEntry]:
    """DDTP-shaped entries whose Danish texts are real Danish prose (GIMP manual pages)."""
    danish = gimp_texts[:25]
    paras = [p for t in danish for p in re.split(r"\n\s*\n", t) if len(p.split()) > 8]
    return [
        DdtpEntry(
            md5=f"{i:032x}",
            packages=[f"pakke{i:04d}"],
            section=SECTIONS[i % 7 if i % 5 else 7 + i % 3],
            short_en=f"tool number {i} for images",
            long_en="An invented description.",
            short_da=f"Værktøj nummer {i} til billeder",
            long_da=paras[i % len(paras)],
        )
        for i in range(600)
    ]


def check_tasks(tasks: TaskSet, entries: list[DdtpEntry], lang: str = "da") -> None:
    """The invariants every DDTP task set must hold."""
    splits = assign_splits(entries)
    side = {p: splits[e.md5] for e in entries for p in e.packages}
    for name, docs in tasks.docs.items():
        assert docs, name
        assert all(side[d["package"]] == "eval" for d in docs), f"{name}: a non-eval package"
    # never in what the instruction-data tool writes (train/valid)
    trained = {
        r["package"] for r in build_instructions(entries, include_eval=False) if "package" in r
    }
    used = {d["package"] for docs in tasks.docs.values() for d in docs}
    assert not used & trained
    scala = tasks.docs[f"{lang}_scala_ddtp"]
    originals = {" ".join(d["good"].split()) for d in scala}
    for d in scala:
        good, bad = d["good"].split(), d["bad"].split()
        assert d["bad"] != d["good"] and " ".join(bad) not in originals
        if d["kind"] == "swap":
            assert len(bad) == len(good)
            diff = [i for i in range(len(good)) if good[i].lower() != bad[i].lower()]
            assert len(diff) == 2 and diff[1] == diff[0] + 1
            assert sorted(w.lower().strip(".!?") for w in good) == sorted(
                w.lower().strip(".!?") for w in bad
            )
        else:
            assert d["kind"] == "drop" and len(bad) == len(good) - 1
    assert {d["kind"] for d in scala} == {"swap", "drop"}
    section = tasks.docs[f"{lang}_ddtp_section"]
    choices = section[0]["choices"]
    assert len(choices) == len(set(choices)) >= 2
    for d in section:
        assert d["choices"] == choices and d["choices"][d["label"]] == d["section"]
    for d in tasks.docs[f"{lang}_ddtp_translate"]:
        assert d["en"] and d["target"] and d["en"] != d["target"]


def test_ddtp_tasks_on_danish_prose(danish_entries):
    tasks = ddtp_tasks(danish_entries, limit=None, n_sections=5)
    check_tasks(tasks, danish_entries)
    assert tasks.extra["da_ddtp_section"]["sections"] == sorted(
        ["admin", "devel", "doc", "games", "graphics"]
    )  # the 5 most common of the 10
    assert len(tasks.docs["da_scala_ddtp"]) > 20
    again = ddtp_tasks(danish_entries, limit=12, n_sections=5)
    assert all(len(d) == 12 for d in again.docs.values())
    assert again.docs == ddtp_tasks(danish_entries, limit=12, n_sections=5).docs  # seeded


def test_real_ddtp_tasks():
    from megatron_lang.data.ddtp import load_ddtp

    if not list(APT_LISTS_DIR.glob("*_i18n_Translation-da*")):
        pytest.skip("no Translation-da in /var/lib/apt/lists (apt-get update -o "
                    "Acquire::Languages=da,en)")  # fmt: skip
    entries = load_ddtp()
    tasks = ddtp_tasks(entries, limit=300)
    check_tasks(tasks, entries)
    assert all(len(d) == 300 for d in tasks.docs.values())


def test_sentences_and_corruptions_on_real_text(gimp_texts):
    found = [s for t in gimp_texts[:25] for s in sentences(t)]
    assert len(found) > 50
    assert all(5 <= len(s.split()) <= 30 and s[-1] in ".!?" and s[0].isupper() for s in found)
    originals = {" ".join(s.split()) for s in found}
    rng = random.Random(0)
    made = [corrupt(s, rng, originals) for s in found]
    assert sum(m is not None for m in made) > 0.9 * len(found)
    for s, m in zip(found, made):
        if m is not None:
            assert m[1] != s and " ".join(m[1].split()) not in originals
            assert m[1][-1] == s[-1]  # the final punctuation stays
    # a corruption that would equal another original sentence is never chosen
    # (3 words: no drop; the swaps give "Er den god." and "Den god er.")
    others = {"Den er god.", "Er den god."}
    assert corrupt("Den er god.", random.Random(0), others) == ("swap", "Den god er.")
    assert corrupt("Den er god.", random.Random(0), others | {"Den god er."}) is None


def test_folder_is_what_lm_eval_reads_and_is_written_whole(tmp_path, danish_entries):
    tasks = merge([ddtp_tasks(danish_entries, limit=10), text_tasks({"mine": ["Hej verden."]})])
    out = tmp_path / "eval"
    manifest = write_task_data(tasks, out, ["src"], {"seed": 0})
    assert set(manifest["tasks"]) == {
        "da_ddtp_bpb", "da_ddtp_translate", "da_scala_ddtp", "da_ddtp_section", "mine_bpb"
    }  # fmt: skip
    assert read_manifest(out)["licence"].startswith("Built from Debian")
    for name in manifest["tasks"]:
        spec = yaml.safe_load((out / "tasks" / f"{name}.yaml").read_text())
        assert spec["task"] == name
        data = Path(spec["dataset_kwargs"]["data_files"]["test"])
        assert data.is_absolute() and data == out.resolve() / f"{name}.jsonl"
        assert len(data.read_text().splitlines()) == manifest["tasks"][name]["documents"]
    spec = yaml.safe_load((out / "tasks" / "da_ddtp_translate.yaml").read_text())
    assert spec["doc_to_text"].startswith("Oversæt fra engelsk til dansk")
    with pytest.raises(DownstreamDataError, match="exists"):
        write_task_data(tasks, out, [], {})
    with pytest.raises(DownstreamDataError, match="twice"):
        merge([text_tasks({"a": ["x"]}), text_tasks({"a": ["y"]})])
    with pytest.raises(DownstreamDataError, match="not a downstream task folder"):
        read_manifest(tmp_path)
    with pytest.raises(DownstreamDataError, match="no non-empty"):
        text_tasks({"b": ["  "]})
    json.loads((out / "manifest.json").read_text())
