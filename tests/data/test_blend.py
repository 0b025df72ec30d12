"""Blend specs: YAML loading, validation errors, water-filled effective weights, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_lang.data.blend import BlendError, BlendSpec, water_fill

pytestmark = pytest.mark.unit


def write_indexed_dataset(
    prefix: Path, lengths: list[int] | np.ndarray, seed: int = 0, vocab: int = 1000
) -> Path:
    """Write a Megatron ``.bin``/``.idx`` pair of random token ids, one document per length."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    for length in lengths:
        builder.add_item(torch.from_numpy(rng.integers(1, vocab, int(length)).astype(np.int64)))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return prefix


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def three_sources(tmp_path: Path) -> Path:
    """a: 1,000 tokens; b: 3,000; c: 10,000 (documents of 100 tokens)."""
    write_indexed_dataset(tmp_path / "a", [100] * 10, seed=1)
    write_indexed_dataset(tmp_path / "b", [100] * 30, seed=2)
    write_indexed_dataset(tmp_path / "c", [100] * 100, seed=3)
    return tmp_path


def test_excess_redistributes_in_a_hand_checked_cascade(three_sources):
    spec = BlendSpec.from_dict(
        {
            "sources": [
                {"name": "a", "path": "a", "weight": 0.5, "max_epochs": 2, "language": "da"},
                {"name": "b", "path": "b", "weight": 0.25, "max_epochs": 1},
                {"name": "c", "path": "c", "weight": 0.25},
            ]
        },
        base_dir=three_sources,
    )
    report = spec.compute_effective_weights(10_000)
    # a wants 5,000 but may give 2 x 1,000; b and c split 8,000 -> b wants 4,000 but
    # may give 1 x 3,000; c takes the remaining 5,000.
    assert [r.tokens_available for r in report.sources] == [1000, 3000, 10_000]
    assert [r.tokens_drawn for r in report.sources] == pytest.approx([2000, 3000, 5000])
    assert [r.epochs for r in report.sources] == pytest.approx([2.0, 1.0, 0.5])
    assert report.effective_weights == pytest.approx([0.2, 0.3, 0.5])
    assert [r.weight for r in report.sources] == pytest.approx([0.5, 0.25, 0.25])


def test_caps_not_binding_keep_the_requested_weights(three_sources):
    spec = BlendSpec.from_dict(
        {"sources": [{"name": n, "path": n, "weight": 1, "max_epochs": 8} for n in "abc"]},
        base_dir=three_sources,
    )
    report = spec.compute_effective_weights(3000)
    assert report.effective_weights == pytest.approx([1 / 3] * 3)


def test_random_blends_respect_caps_and_shares_sum_to_one():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        weights = list(rng.random(n) + 0.01)
        caps = [math.inf if rng.random() < 0.3 else float(rng.integers(0, 1000)) for _ in weights]
        total = float(rng.uniform(1, max(1.0, min(sum(caps), 5000.0))))
        alloc = water_fill(weights, caps, total)
        assert sum(alloc) == pytest.approx(total)
        assert all(a <= c * (1 + 1e-12) for a, c in zip(alloc, caps))
        # uncapped sources keep the ratio of their weights: x_i = min(cap_i, lam * w_i)
        free = [i for i in range(n) if alloc[i] < caps[i]]
        if free:
            lam = alloc[free[0]] / weights[free[0]]
            for i in range(n):
                assert alloc[i] == pytest.approx(min(caps[i], lam * weights[i]))


def test_report_epochs_within_caps_table_and_json(three_sources):
    spec = BlendSpec.from_dict(
        {
            "sources": [
                {"name": "a", "path": "a", "weight": 3, "max_epochs": 1.5},
                {"name": "b", "path": "b", "weight": 1, "max_epochs": 4},
                {"name": "c", "path": "c", "weight": 1, "max_epochs": 1},
            ]
        },
        base_dir=three_sources,
    )
    for total in (500.0, 5000.0, 13_500.0, 14_000.0):
        report = spec.compute_effective_weights(total)
        assert sum(report.effective_weights) == pytest.approx(1.0)
        for row, src in zip(report.sources, spec.sources):
            assert row.epochs <= src.max_epochs + 1e-9
    data = json.loads(report.to_json())
    assert [s["name"] for s in data["sources"]] == ["a", "b", "c"]
    table = report.to_table()
    assert "epochs" in table and "total" in table and "1.0000" in table
    assert table.splitlines()[2].split()[0] == "a"


def test_caps_that_cannot_supply_the_tokens_name_the_sources(three_sources):
    spec = BlendSpec.from_dict(
        {
            "sources": [
                {"name": "a", "path": "a", "weight": 1, "max_epochs": 2},
                {"name": "b", "path": "b", "weight": 1, "max_epochs": 1},
            ]
        },
        base_dir=three_sources,
    )
    spec.compute_effective_weights(5000)  # exactly the supply
    with pytest.raises(BlendError, match=r"cannot supply 5001 tokens.*a: 2000.*b: 3000"):
        spec.compute_effective_weights(5001)


def test_yaml_paths_resolve_against_the_spec_folder_or_root(three_sources, tmp_path):
    spec_path = _write_yaml(
        three_sources / "blend.yaml",
        "split: '90,10,0'\nsources:\n  - {name: a, path: a, weight: 1, language: da}\n",
    )
    spec = BlendSpec.from_yaml(spec_path)
    assert spec.sources[0].path == str(three_sources / "a")
    assert spec.sources[0].language == "da" and spec.split == "90,10,0"
    stats = spec.stats(spec.sources[0])
    assert (stats.train_sequences, stats.valid_sequences) == (9, 1)
    other = tmp_path / "elsewhere"
    other.mkdir()
    spec_path = _write_yaml(
        other / "blend.yaml", "root: ..\nsources:\n  - {name: a, path: a, weight: 1}\n"
    )
    assert BlendSpec.from_yaml(spec_path).sources[0].path == str(tmp_path / "a")


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"name": "a", "path": "a", "weight": 1, "epochs": 2}], r"'a'.*unknown key.*'epochs'"),
        ([{"name": "a", "path": "a", "weight": 0}], r"source 'a': 'weight' must be > 0"),
        ([{"name": "a", "path": "a", "weight": -1.5}], r"source 'a': 'weight' must be > 0"),
        ([{"name": "a", "path": "a", "weight": "x"}], r"source 'a': 'weight' must be a number"),
        ([{"name": "a", "path": "a", "weight": 1, "max_epochs": 0}], r"'a': 'max_epochs'"),
        ([{"name": "a", "weight": 1}], r"'a'.*missing required key.*'path'"),
        ([{"name": "z", "path": "zz", "weight": 1}], r"source 'z': 'path' file .*zz.bin"),
        (
            [{"name": "a", "path": "a", "weight": 1, "valid_path": "nope"}],
            r"source 'a': 'valid_path' file .*nope.bin not found",
        ),
        ([{"name": "a", "path": "a", "weight": 1}] * 2, r"'a' is empty or used twice"),
        ([], r"'sources' must be a non-empty list"),
    ],
)
def test_validation_errors_name_the_source_and_key(three_sources, sources, message):
    with pytest.raises(BlendError, match=message):
        BlendSpec.from_dict({"sources": sources}, base_dir=three_sources)


def test_unknown_top_level_key_and_bad_split(three_sources):
    src = [{"name": "a", "path": "a", "weight": 1}]
    with pytest.raises(BlendError, match=r"unknown top-level key.*'weights'"):
        BlendSpec.from_dict({"sources": src, "weights": [1]}, base_dir=three_sources)
    with pytest.raises(BlendError, match=r"'split' 'x,y' is not a valid"):
        BlendSpec.from_dict({"sources": src, "split": "x,y"}, base_dir=three_sources)
