"""megatron-core GPT datasets from a blend spec, with repetition caps enforced.

Why not hand the blend straight to ``BlendedMegatronDatasetBuilder``?  megatron-core
has no notion of a per-source limit.  With the requested weights it repeats a
small source as often as its weight demands (the test suite shows a source capped
at 2 epochs drawn about 8 times over).  Feeding it our water-filled effective
weights instead lands on the caps in practice (0 of 2,000 random integer-cap
configurations exceeded one with its ``build_blending_indices``), but nothing
guarantees it: the counts come from floating-point deficits, and each source's
``GPTDataset`` is sized ``ceil(weight * N * (1 + mid_level_dataset_surplus))``,
which can build one epoch more than ``max_epochs``.

So the training split is built in three steps:

1. :func:`plan_train_blend` turns the caps into sample caps
   (``floor(max_epochs * samples_per_epoch)``), water-fills the requested
   weights against them (so capped sources are spread evenly over the whole run
   instead of being exhausted early) and builds the capped blend index
   (``megatron_lang._C``), which guarantees ``drawn_i <= cap_i`` exactly.
2. Each source gets its own ``GPTDataset`` through ``BlendedMegatronDatasetBuilder``
   (distributed-aware: built on the chosen ranks, cached, barriers), sized to
   exactly the samples the index draws from it, so it never builds more than
   ``ceil(max_epochs)`` epochs (documents repeat at most that often).
3. :class:`CappedBlendedDataset` -- megatron-core's ``BlendedDataset`` with its
   index-building step replaced by the capped index -- interleaves them.  The
   index is not cached on disk: every rank recomputes it (deterministic, about
   0.05 s per million samples on one core).

Validation is per source (one ``GPTDataset`` each, keyed ``language/name``) for
per-language perplexity: from ``valid_path`` when the source has one, otherwise
from the validation part of the blend's ``split``.

Every split is checked *before* megatron-core sees it: with 0.16.1 a split with
zero sequences makes ``GPTDataset._get_num_epochs`` loop forever.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megatron_lang.data.blend import BlendError, BlendSource, BlendSpec, water_fill
from megatron_lang.data.blend_index import UNCAPPED, BlendIndex, build_capped_blend_index
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)


@dataclass
class TokenIds:
    """The token ids megatron-core's GPT datasets need, when no full tokenizer is at hand."""

    eod: int
    """End-of-document id (separates documents inside a sample)."""
    vocab_size: int
    """Vocabulary size (selects the on-disk token dtype)."""
    pad: int | None = None
    """Padding id, if the tokenizer has a distinct one."""

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        """What megatron-core hashes into its dataset cache names."""
        return {"class": type(self).__name__, "eod": self.eod, "vocab_size": self.vocab_size}


@dataclass
class TrainBlendPlan:
    """Sample-level plan of the training blend."""

    samples_per_epoch: list[int]
    """Samples of ``seq_length`` (+1) tokens in one pass over each source's training part."""
    caps: list[int]
    """Most samples drawable per source (``UNCAPPED`` when the source has no cap)."""
    effective_weights: list[float]
    """Water-filled weights that respect the caps (sum to 1)."""
    index: BlendIndex
    """The capped blend index; ``index.drawn`` are the samples taken per source."""


def check_splits(spec: BlendSpec, seq_length: int) -> None:
    """Fail fast, naming the source, on any split megatron-core cannot build.

    Raises:
        BlendError: a training part with no sequences or less than one sample of
            tokens, or a validation part requested by ``split``/``valid_path``
            that is empty.
    """
    need = seq_length + 1
    for src in spec.sources:
        stats = spec.stats(src)
        where = f"source {src.name!r} ({src.path})"
        if stats.train_sequences == 0:
            raise BlendError(
                f"{where}: split {spec.split!r} leaves its training part with 0 sequences; "
                "megatron-core would never return -- use a coarser split or a valid_path"
            )
        if stats.train_tokens < need:
            raise BlendError(
                f"{where}: its training part has {stats.train_tokens} tokens, fewer than one "
                f"sample ({need} tokens at seq_length {seq_length})"
            )
        if _has_valid(spec, src) and (stats.valid_sequences == 0 or stats.valid_tokens < need):
            raise BlendError(
                f"{where}: its validation part ({src.valid_path or 'split ' + repr(spec.split)}) "
                f"has {stats.valid_sequences} sequences / {stats.valid_tokens} tokens, fewer "
                f"than one sample ({need} tokens); megatron-core would hang or yield nothing"
            )


def preprocessing_summary(prefix: str | Path) -> dict | None:
    """The ``{output_prefix}_summary.json`` written with the dataset ``prefix``, if any.

    ``preprocess_data.py --output-prefix P`` writes ``P_{key}_document.bin/.idx`` and
    ``P_summary.json``; the summary names the tokenizer and its ``vocab_size``.
    """
    import json

    p = Path(prefix)
    name = p.name
    if not name.endswith("_document"):
        return None
    stem = name[: -len("_document")]
    for i in range(len(stem) - 1, 0, -1):  # P_{key}: the key may itself contain "_"
        if stem[i] != "_":
            continue
        base, key = stem[:i], stem[i + 1 :]
        summary = p.with_name(f"{base}_summary.json")
        if summary.is_file():
            try:
                data = json.loads(summary.read_text())
            except (OSError, ValueError):
                return None
            if key in data.get("outputs", [key]):
                return data
    return None


def check_token_ids(spec: BlendSpec, vocab_size: int) -> None:
    """Fail fast when a source was tokenized with a bigger vocabulary than the model's.

    Ids >= ``vocab_size`` would index past the tokenizer's rows (into padding, or past
    the embedding). Read from each dataset's preprocessing summary; sources without
    one are not checked. A smaller vocabulary passes: an extended tokenizer keeps the
    base ids, so data made with the base tokenizer is valid for the extended model.

    Raises:
        BlendError: naming the source, its tokenizer and both sizes.
    """
    for src in spec.sources:
        for prefix in (src.path, src.valid_path):
            if prefix is None:
                continue
            summary = preprocessing_summary(prefix)
            if not summary or not isinstance(summary.get("vocab_size"), int):
                continue
            if summary["vocab_size"] > vocab_size:
                raise BlendError(
                    f"source {src.name!r} ({prefix}): tokenized with {summary.get('tokenizer')} "
                    f"(vocabulary {summary['vocab_size']}), but the model's tokenizer has "
                    f"{vocab_size} tokens: ids >= {vocab_size} have no trained row. Convert the "
                    "model with that tokenizer (hf_to_megatron.py --new-tokenizer, "
                    "docs/embedding_init.md) or tokenize the data with the model's tokenizer"
                )


def _has_valid(spec: BlendSpec, src: BlendSource) -> bool:
    if src.valid_path is not None:
        return True
    if spec.split is None:
        return False
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    return parse_and_normalize_split(str(spec.split))[1] > 0


def plan_train_blend(spec: BlendSpec, seq_length: int, train_samples: int) -> TrainBlendPlan:
    """Sample caps, effective weights and the capped index for ``train_samples`` samples.

    Raises:
        BlendError: invalid splits, or caps that cannot supply ``train_samples``.
    """
    check_splits(spec, seq_length)
    per_epoch = [(spec.stats(s).train_tokens - 1) // seq_length for s in spec.sources]
    caps = [
        int(UNCAPPED) if s.max_epochs is None else int(math.floor(s.max_epochs * n))
        for s, n in zip(spec.sources, per_epoch)
    ]
    supply = sum(min(c, train_samples) for c in caps)
    if supply < train_samples:
        detail = ", ".join(f"{s.name}: {c}" for s, c in zip(spec.sources, caps))
        raise BlendError(
            f"the caps supply only {supply} samples of {seq_length} tokens but {train_samples} "
            f"are requested ({detail}); raise max_epochs or add an uncapped source"
        )
    alloc = water_fill(
        [s.weight for s in spec.sources], [float(c) for c in caps], float(train_samples)
    )
    weights = [a / train_samples for a in alloc]
    positive = [max(w, 1e-300) for w in weights]  # a zero-cap source keeps a legal weight
    index = build_capped_blend_index(positive, caps, train_samples)
    for src, drawn, cap in zip(spec.sources, index.drawn, caps):
        shown = "none" if cap == UNCAPPED else cap
        logger.info("blend source %s: %d samples (cap %s)", src.name, drawn, shown)
    return TrainBlendPlan(per_epoch, caps, weights, index)


def _capped_blended_dataset_class() -> type:
    from megatron.core.datasets.blended_dataset import BlendedDataset

    class CappedBlendedDataset(BlendedDataset):
        """megatron-core ``BlendedDataset`` whose indices come from the capped blend index."""

        def __init__(self, datasets: list, weights: list[float], index: BlendIndex, config):
            self._capped_index = index
            super().__init__(datasets, weights, len(index.dataset_index), config)

        def _build_indices(self) -> tuple[np.ndarray, np.ndarray]:
            for i, (dataset, drawn) in enumerate(zip(self.datasets, self._capped_index.drawn)):
                if drawn > len(dataset):
                    raise IndexError(f"blend source {i}: {drawn} samples > {len(dataset)}")
            return self._capped_index.dataset_index, self._capped_index.dataset_sample_index

    return CappedBlendedDataset


@dataclass
class BlendDatasets:
    """What :func:`build_blend_datasets` returns."""

    train: Any
    """``CappedBlendedDataset`` of ``train_samples`` samples (items carry ``dataset_id``)."""
    valid: dict[str, Any]
    """One ``GPTDataset`` per source with a validation part, keyed ``language/name``."""
    plan: TrainBlendPlan
    """The sample-level plan behind ``train``."""


def valid_label(src: BlendSource) -> str:
    """Label of a source's validation set: ``language/name``, or ``name`` alone.

    The name alone when there is no language or the source is named after it
    (``da``, not ``da/da``: tags ``val/da/loss``). The first part stays the language
    wherever there is one (``analysis/summary.py`` reads it).
    """
    lang, name = src.language, src.name
    return f"{lang}/{name}" if lang and name != lang else name


def build_blend_datasets(
    spec: BlendSpec,
    *,
    seq_length: int,
    train_samples: int,
    tokenizer: Any,
    seed: int = 1234,
    valid_samples: int | None = None,
    path_to_cache: str | None = None,
    is_built_on_rank: Callable[[], bool] = lambda: True,
    **gpt_config: Any,
) -> BlendDatasets:
    """Build the capped training blend and per-source validation sets.

    Call on every rank (megatron-core synchronises with barriers when
    ``torch.distributed`` is initialised).

    Args:
        spec: the blend.
        seq_length: tokens per sample.
        train_samples: samples in the training blend (global batch x iterations).
        tokenizer: object with ``eod`` and ``vocab_size`` (a megatron tokenizer or :class:`TokenIds`).
        seed: shuffling seed.
        valid_samples: samples per validation set; ``None`` is one pass over it.
        path_to_cache: where megatron-core caches its index files (``None``: megatron-core's
            default, a ``cache/`` folder beside the data).
        is_built_on_rank: whether this rank builds (others load the cache).
        **gpt_config: extra ``GPTDatasetConfig`` fields (e.g. ``eod_mask_loss=True``).
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    plan = plan_train_blend(spec, seq_length, train_samples)
    options = {"reset_position_ids": False, "reset_attention_mask": False, "eod_mask_loss": False}
    options.update(gpt_config)
    trains, valid = [], {}
    for src, drawn in zip(spec.sources, plan.index.drawn):
        has_valid = _has_valid(spec, src)
        common = dict(
            random_seed=seed,
            sequence_length=seq_length,
            tokenizer=tokenizer,
            path_to_cache=path_to_cache,
            **options,
        )
        if src.valid_path is not None or spec.split is None:
            valid_blend = ([src.valid_path], None) if src.valid_path else None
            config = GPTDatasetConfig(
                blend_per_split=[([src.path], None), valid_blend, None], **common
            )
        else:
            config = GPTDatasetConfig(blend=([src.path], None), split=str(spec.split), **common)
            config.split_matrix = [*config.split_matrix[:2], None]  # never build the test part
        sizes = [int(drawn), valid_samples if has_valid else None, None]
        train_ds, valid_ds, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, sizes, is_built_on_rank, config
        ).build()
        trains.append(train_ds)
        if has_valid:
            valid[valid_label(src)] = valid_ds
    blend_config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        tokenizer=tokenizer,
        path_to_cache=None,
        blend_per_split=[([s.path for s in spec.sources], None), None, None],
        **options,
    )
    cls = _capped_blended_dataset_class()
    weights = [max(w, 1e-300) for w in plan.effective_weights]
    train = cls(trains, weights, plan.index, blend_config)
    return BlendDatasets(train=train, valid=valid, plan=plan)
