"""The vocabulary-size sweep on the real GIMP Danish/English text with SmolLM2's tokenizer.

One sweep (sizes 600, 1200, 2400) is run once through the CLI; the tests check its
figures (Danish tokens/word never rises, English never rises and stays within 1 % of
the base, tokens added increase), its files, and the method (a size's tokenizer is
exactly the BPE trained at that size; a smaller size's extension is a prefix of a larger
one's).  The property checks are plain functions, and
``test_property_checks_reject_broken_sweeps`` shows each of them failing on a sweep
whose rows were reversed or perturbed.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from megatron_lang.adaptation.tokenizer_files import TokenizerError
from megatron_lang.adaptation.vocab_sweep import SweepConfig, run_sweep, truncate_bpe
from tools.preprocess import vocab_sweep

pytestmark = pytest.mark.unit

SIZES = [600, 1200, 2400]


@pytest.fixture(scope="module")
def sweep_run(danish_corpus, english_corpus, smollm2_tokenizer_dir, tmp_path_factory):
    """``(out_dir, stdout, stderr)`` of one CLI sweep; the tokenizers are kept."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = vocab_sweep.main(
            ["--corpus", str(danish_corpus.train), "--heldout", f"da={danish_corpus.heldout}",
             f"en={english_corpus}", "--base-tokenizer", str(smollm2_tokenizer_dir),
             "--sizes", *map(str, reversed(SIZES)), "--out-dir", str(out),
             "--heldout-max-docs", "80", "--keep-tokenizers"]
        )  # fmt: skip
    assert rc == 0, se.getvalue()
    return out, so.getvalue(), se.getvalue()


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "sweep.json").read_text())["rows"]


# ---------------------------------------------------------------- the property checks
def check_never_rises(rows: list[dict], label: str) -> None:
    """Tokens/word of ``label`` never rises from one row to the next (base first)."""
    values = [r["tokens_per_word"][label] for r in rows]
    for a, b, r in zip(values, values[1:], rows[1:]):
        assert b <= a, f"{label} tokens/word rose to {b} at size {r['size']} (from {a})"


def check_within_base(rows: list[dict], label: str, tolerance: float = 0.01) -> None:
    """Tokens/word of ``label`` is never more than ``tolerance`` above the base's."""
    for r in rows:
        assert r["change"][label] <= tolerance, (label, r["size"], r["change"][label])


def check_added_increases(rows: list[dict]) -> None:
    """Sizes increase, and so do the tokens added (never fewer for a larger size)."""
    sizes = [r["size"] for r in rows]
    added = [r["added"] for r in rows]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert added == sorted(added) and added[-1] > added[0], added


def test_danish_fertility_never_rises(sweep_run):
    rows = _rows(sweep_run[0])
    assert [r["size"] for r in rows] == [0, *SIZES]  # base first, sizes sorted
    check_never_rises(rows, "da")
    assert rows[-1]["change"]["da"] < -0.03  # the largest size helps clearly (−5 % here)


def test_english_never_rises_and_stays_within_one_percent(sweep_run):
    rows = _rows(sweep_run[0])
    check_never_rises(rows, "en")
    check_within_base(rows, "en", 0.01)


def test_tokens_added_increase_with_size(sweep_run):
    rows = _rows(sweep_run[0])
    check_added_increases(rows)
    assert rows[0]["added"] == 0 and rows[0]["vocab_size"] == 49152
    for r in rows[1:]:
        assert r["vocab_size"] == 49152 + r["added"]
        assert r["new_tokenizer_size"] == r["size"]


def test_property_checks_reject_broken_sweeps(sweep_run):
    rows = _rows(sweep_run[0])
    reversed_sizes = [rows[0], *reversed(rows[1:])]  # the sizes' outputs in reverse order
    with pytest.raises(AssertionError, match="da tokens/word rose"):
        check_never_rises(reversed_sizes, "da")
    with pytest.raises(AssertionError, match="en tokens/word rose"):
        check_never_rises(reversed_sizes, "en")
    with pytest.raises(AssertionError):
        check_added_increases(reversed_sizes)
    worse = json.loads(json.dumps(rows))
    worse[-1]["change"]["en"] = 0.011  # English 1.1 % worse than the base
    with pytest.raises(AssertionError):
        check_within_base(worse, "en", 0.01)


def test_outputs_table_json_plot(sweep_run):
    out, stdout, stderr = sweep_run
    assert sorted(p.name for p in out.iterdir()) == [
        "sweep.json", "sweep.md", "sweep.png", "tokenizers"]  # fmt: skip
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| new tokenizer size | tokens added | vocab | da tok/word")
    assert len(table) == 2 + 1 + len(SIZES)  # header, rule, base, one line per size
    rows = _rows(out)
    assert f"| {rows[-1]['tokens_per_word']['da']:.3f} |" in table[-1]
    assert table == stdout.splitlines()[: len(table)]  # printed too
    for i, size in enumerate(SIZES, 1):  # progress lines
        assert f"[{i}/{len(SIZES)}] size {size}: {rows[i]['added']} tokens added" in stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["labels"] == ["da", "en"] and doc["heldout"]["da"]["documents"] == 80
    assert doc["train"]["vocab_size"] == SIZES[-1]
    names = {p.name for p in (out / "tokenizers").iterdir()}
    assert names == {f"extended_{s}" for s in SIZES} | {f"new_{SIZES[-1]}"}
    assert not list(out.parent.glob(".*incomplete*"))


def test_prefix_is_the_bpe_trained_at_that_size(sweep_run, danish_corpus, tmp_path):
    """Truncating the largest BPE by merge rank = training at the smaller size."""
    from megatron_lang.adaptation.tokenizer_train import TrainConfig, train_tokenizer

    out = sweep_run[0]
    big = json.loads((out / "tokenizers" / f"new_{SIZES[-1]}" / "tokenizer.json").read_text())
    train_tokenizer(TrainConfig([str(danish_corpus.train)], str(tmp_path / "t"), "bpe", SIZES[1]))
    direct = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    cut = truncate_bpe(big, SIZES[1])
    assert cut["model"]["vocab"] == direct["model"]["vocab"]
    assert cut["model"]["merges"] == direct["model"]["merges"]
    assert cut["added_tokens"] == direct["added_tokens"]
    assert truncate_bpe(big, 10**6) == big


def test_smaller_extension_is_a_prefix_of_larger(sweep_run):
    """Same ids for the shared tokens, merges a prefix: why fertility cannot rise."""
    tok = sweep_run[0] / "tokenizers"
    models = [
        json.loads((tok / f"extended_{s}" / "tokenizer.json").read_text())["model"] for s in SIZES
    ]
    for small, large in zip(models, models[1:]):
        assert small["vocab"].items() <= large["vocab"].items()
        assert large["merges"][: len(small["merges"])] == small["merges"]
        assert len(large["vocab"]) > len(small["vocab"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        vocab_sweep.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "tools/preprocess/vocab_sweep.py" in out


def test_errors_name_the_input_and_write_nothing(
    danish_corpus, smollm2_tokenizer_dir, mistral_sp_model, tmp_path, capsys
):
    base = ["--base-tokenizer", str(smollm2_tokenizer_dir)]
    train = ["--corpus", str(danish_corpus.train)]
    out = tmp_path / "o"
    held = ["--heldout", f"da={danish_corpus.heldout}"]

    def run(*args: str) -> str:
        assert vocab_sweep.main([*args, "--out-dir", str(out)]) == 1
        return capsys.readouterr().err

    assert "missing.jsonl: held-out file does not exist" in run(
        *train, *base, "--sizes", "600", "--heldout", str(tmp_path / "missing.jsonl")
    )
    assert "nope.jsonl" in run(
        "--corpus", str(tmp_path / "nope.jsonl"), *held, *base, "--sizes", "600"
    )
    assert "too small" in run(*train, *held, *base, "--sizes", "100")
    assert "duplicates" in run(*train, *held, *base, "--sizes", "600", "600")
    err = run(*train, *held, "--base-tokenizer", str(mistral_sp_model), "--sizes", "600")
    assert "byte-level BPE base tokenizers" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hej"}\nnot json\n')
    assert "bad.jsonl" in run(*train, "--heldout", f"da={bad}", *base, "--sizes", "600")
    assert not out.exists() and not list(tmp_path.glob(".*incomplete*"))
    out.mkdir()
    (out / "sweep.md").write_text("old\n")
    assert "--overwrite" in run(*train, *held, *base, "--sizes", "600")
    assert (out / "sweep.md").read_text() == "old\n"


def test_overwrite_replaces_an_old_sweep(danish_corpus, smollm2_tokenizer_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    config = SweepConfig(
        corpus=[str(danish_corpus.train)],
        heldout=[f"da={danish_corpus.heldout}"],
        base_tokenizer=str(smollm2_tokenizer_dir),
        sizes=[600],
        out_dir=str(out),
        heldout_max_docs=10,
        max_docs=100,
    )
    with pytest.raises(TokenizerError, match="--overwrite"):
        run_sweep(config)
    config.overwrite = True
    result = run_sweep(config, progress=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json", "sweep.md", "sweep.png"]
    assert [r.size for r in result.rows] == [0, 600]
