"""megatron-core GPT datasets built from a blend: capped counts, per-source validation."""

from __future__ import annotations

import math
import signal
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from megatron_lang.data.blend import BlendError, BlendSpec
from megatron_lang.data.blend_index import UNCAPPED
from megatron_lang.data.gpt_dataset import TokenIds, build_blend_datasets, plan_train_blend
from tests.data.test_blend import write_indexed_dataset

pytestmark = pytest.mark.unit

SEQ = 32
TOKENIZER = TokenIds(eod=0, vocab_size=1000)


@contextmanager
def time_limit(seconds: int):
    """Raise TimeoutError if the block runs longer (guards against megatron-core hangs)."""

    def _raise(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: megatron-core is hanging")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("blend-data")
    rng = np.random.default_rng(0)
    write_indexed_dataset(root / "a", [41] * 40, seed=1)  # 1,640 tokens
    write_indexed_dataset(root / "b", rng.integers(20, 60, 400), seed=2)
    write_indexed_dataset(root / "c", rng.integers(20, 60, 200), seed=3)
    write_indexed_dataset(root / "cv", rng.integers(20, 60, 30), seed=4)
    write_indexed_dataset(root / "tiny", [40] * 20, seed=5)
    return root


def _spec(data_dir: Path, split: str | None = "90,10,0") -> BlendSpec:
    sources = [
        {"name": "a", "path": "a", "weight": 0.5, "max_epochs": 2, "language": "da"},
        {"name": "b", "path": "b", "weight": 0.3, "language": "en"},
        {"name": "c", "path": "c", "weight": 0.2, "max_epochs": 1.5, "valid_path": "cv"},
    ]
    return BlendSpec.from_dict({"split": split, "sources": sources}, base_dir=data_dir)


def test_samples_follow_the_capped_index_and_never_exceed_caps(data_dir):
    spec = _spec(data_dir)
    with time_limit(60):
        built = build_blend_datasets(
            spec, seq_length=SEQ, train_samples=800, tokenizer=TOKENIZER, seed=7
        )
    plan = built.plan
    assert len(built.train) == 800
    seen = Counter()
    for i in range(len(built.train)):
        item = built.train[i]
        assert item["tokens"].shape == (SEQ,)
        seen[int(item["dataset_id"])] += 1
    assert [seen[i] for i in range(3)] == plan.index.drawn.tolist()
    assert plan.caps[0] < 0.5 * 800  # a's cap binds ...
    assert plan.index.drawn[0] == plan.caps[0]  # ... and is reached exactly, not exceeded
    for src, drawn, cap, dataset in zip(
        spec.sources, plan.index.drawn, plan.caps, built.train.datasets
    ):
        stats = spec.stats(src)
        assert drawn <= cap
        assert len(dataset) >= drawn
        if src.max_epochs is not None:
            assert drawn * SEQ <= src.max_epochs * stats.train_tokens
            epochs_built = len(dataset.document_index) / stats.train_sequences
            assert epochs_built <= math.ceil(src.max_epochs)
    assert plan.caps[1] == UNCAPPED
    assert sum(plan.effective_weights) == pytest.approx(1.0)


def test_per_source_validation_sets(data_dir):
    spec = _spec(data_dir)
    with time_limit(60):
        built = build_blend_datasets(spec, seq_length=SEQ, train_samples=200, tokenizer=TOKENIZER)
    assert sorted(built.valid) == ["c", "da/a", "en/b"]
    # c validates on its own prefix: one pass over cv's tokens
    cv_tokens = spec.stats(spec.sources[2]).valid_tokens
    assert len(built.valid["c"]) == (cv_tokens - 1) // SEQ
    # a and b validate on the 10 % held out by the split
    assert len(built.valid["da/a"]) == (4 * 41 - 1) // SEQ


def test_megatron_core_alone_repeats_beyond_the_cap(data_dir):
    """Why the capped index exists: megatron-core's blend ignores max_epochs."""
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    spec = _spec(data_dir, split=None)
    prefixes = [s.path for s in spec.sources]
    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=SEQ,
        blend=(prefixes, [0.5, 0.3, 0.2]),
        split="100,0,0",
        tokenizer=TOKENIZER,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    with time_limit(60):
        theirs = BlendedMegatronDatasetBuilder(
            GPTDataset, [800, 0, 0], lambda: True, config
        ).build()[0]
        ours = build_blend_datasets(spec, seq_length=SEQ, train_samples=800, tokenizer=TOKENIZER)
    cap_a = ours.plan.caps[0]
    assert cap_a == 2 * ((40 * 41 - 1) // SEQ)
    assert np.sum(theirs.dataset_index == 0) > 3 * cap_a  # about 8 epochs of a
    assert np.sum(ours.train.dataset_index == 0) == cap_a


def test_zero_sequence_split_fails_fast_naming_the_source(data_dir):
    # 20 documents, split 98/1/1: the validation part is round(.98*20)..round(.99*20) = 20..20
    spec = BlendSpec.from_dict(
        {
            "split": "98,1,1",
            "sources": [
                {"name": "big", "path": "b", "weight": 1},
                {"name": "tiny", "path": "tiny", "weight": 1},
            ],
        },
        base_dir=data_dir,
    )
    with (
        time_limit(30),
        pytest.raises(BlendError, match=r"source 'tiny'.*validation part.*0 sequences"),
    ):
        build_blend_datasets(spec, seq_length=SEQ, train_samples=100, tokenizer=TOKENIZER)


def test_empty_training_part_and_short_source_fail_fast(data_dir):
    spec = BlendSpec.from_dict(
        {"split": "0.01,99.99,0", "sources": [{"name": "tiny", "path": "tiny", "weight": 1}]},
        base_dir=data_dir,
    )
    with time_limit(30), pytest.raises(BlendError, match=r"source 'tiny'.*training part with 0"):
        plan_train_blend(spec, SEQ, 10)
    spec = BlendSpec.from_dict(
        {"sources": [{"name": "t", "path": "tiny", "weight": 1}]}, base_dir=data_dir
    )
    with pytest.raises(BlendError, match=r"source 't'.*fewer than one sample"):
        plan_train_blend(spec, 1000, 10)


def test_caps_that_cannot_supply_the_samples(data_dir):
    spec = BlendSpec.from_dict(
        {"sources": [{"name": "a", "path": "a", "weight": 1, "max_epochs": 1}]}, base_dir=data_dir
    )
    with pytest.raises(BlendError, match=r"supply only 51 samples .* 52 are requested.*a: 51"):
        plan_train_blend(spec, SEQ, 52)


def test_data_tokenized_with_a_bigger_vocabulary_is_refused(tmp_path, bpe_tokenizer):
    """The preprocessing summary's vocabulary must fit the model's tokenizer."""
    import json

    from megatron_lang.data.gpt_dataset import check_token_ids, preprocessing_summary
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"side {i} af bogen"}) + "\n" for i in range(5)))
    preprocess(
        PreprocessConfig(
            inputs=[str(corpus)],
            output_prefix=str(tmp_path / "da_web"),
            tokenizer=str(bpe_tokenizer),
            append_eod=True,
            progress=False,
        )
    )
    prefix = tmp_path / "da_web_text_document"
    summary = preprocessing_summary(prefix)
    vocab = summary["vocab_size"]
    assert summary["tokenizer"] == str(bpe_tokenizer) and vocab > 100
    spec = BlendSpec.from_dict({"sources": [{"name": "da", "path": str(prefix), "weight": 1}]})
    check_token_ids(spec, vocab)  # same tokenizer
    check_token_ids(spec, vocab + 500)  # an extension of it keeps the ids
    with pytest.raises(BlendError, match=rf"source 'da' .*vocabulary {vocab}.*has {vocab - 1} tok"):
        check_token_ids(spec, vocab - 1)
    assert preprocessing_summary(tmp_path / "other_text_document") is None


@pytest.mark.unit
def test_validation_labels_name_the_language_once():
    from megatron_lang.data.blend import BlendSource
    from megatron_lang.data.gpt_dataset import valid_label

    def label(name, language):
        return valid_label(BlendSource(name=name, path="p", weight=1.0, language=language))

    assert label("da", "da") == "da"  # tags val/da/loss, not val/da/da/loss
    assert label("da_gimp", "da") == "da/da_gimp"
    assert label("gimp", None) == "gimp"
