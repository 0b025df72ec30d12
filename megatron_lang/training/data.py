"""Training data: the blend spec -> megatron-core datasets -> this rank's micro-batches.

Sample order is fixed by the seed; step ``s`` of the run uses global samples
``[s*G, (s+1)*G)``. Within a step, micro-batch ``m`` of data-parallel rank ``r``
holds samples ``s*G + m*B*DP + r*B + [0, B)`` (``G`` global batch, ``B`` micro
batch), as Megatron-LM's pretraining sampler does. Resuming therefore only
needs the number of consumed samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_lang.config import JobConfig
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


@dataclass
class TrainData:
    """Datasets of a run."""

    train: Any
    """Capped blended training dataset (items carry ``dataset_id``)."""
    valid: dict[str, Any]
    """Validation dataset per source, keyed ``language/name``."""
    source_names: list[str]
    """Blend source names, indexed by ``dataset_id``."""
    eod_id: int
    """End-of-document token id."""


def tokenizer_ids(tokenizer_dir: str | None) -> tuple[int, int]:
    """``(eod_id, vocab_size)`` of the tokenizer in ``tokenizer_dir``."""
    from megatron_lang.data.tokenizer import load_tokenizer

    if tokenizer_dir is None:
        raise ValueError(
            "no tokenizer: set data.tokenizer, or start from a checkpoint that contains one"
        )
    path = Path(tokenizer_dir)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        models = sorted(path.glob("*.model"))
        if models:
            path = models[0]
    backend = "sentencepiece" if path.suffix == ".model" else "hf"
    tok, _, _ = load_tokenizer(path, backend=backend)
    if tok.eod_id is None:
        raise ValueError(f"tokenizer {tokenizer_dir} has no end-of-document token")
    return tok.eod_id, tok.vocab_size


def build_train_data(cfg: JobConfig, tokenizer_dir: str | None) -> TrainData:
    """Datasets for the blend in ``cfg.data.blend`` sized for the whole run."""
    from megatron_lang.data.blend import BlendSpec
    from megatron_lang.data.gpt_dataset import TokenIds, build_blend_datasets, check_token_ids

    d = cfg.data
    if d.chat:
        return build_chat_data(cfg, tokenizer_dir)
    if not d.blend:
        raise ValueError(
            "data.blend is not set: give a blend spec YAML (see docs/blends.md), or data.chat "
            "for instruction tuning (docs/sft.md)"
        )
    spec = BlendSpec.from_yaml(d.blend)
    eod, vocab = tokenizer_ids(tokenizer_dir)
    check_token_ids(spec, vocab)
    doc = d.document_attention
    packed = cfg.model.attention == "packed"
    built = build_blend_datasets(
        spec,
        seq_length=d.seq_length,
        train_samples=cfg.train.steps * d.global_batch_size,
        tokenizer=TokenIds(eod=eod, vocab_size=vocab),
        seed=cfg.train.seed,
        valid_samples=d.valid_samples,
        path_to_cache=str(index_cache_dir(cfg)),
        reset_position_ids=doc,
        reset_attention_mask=doc,
        # objectives build their own masks; packed runs carry segments, no [S, S] mask
        create_attention_mask=doc and not cfg.objective.enabled and not packed,
        eod_mask_loss=d.eod_mask_loss,
    )
    train, valid = built.train, built.valid
    if cfg.objective.enabled:
        from megatron_lang.data.objectives import ObjectiveDataset

        masking = masking_spec(cfg, tokenizer_dir, eod, vocab)
        train = ObjectiveDataset(train, masking)
        if cfg.objective.bidirectional:  # validation is MNTP too; hybrid runs validate causally
            valid = {name: ObjectiveDataset(ds, masking) for name, ds in valid.items()}
    elif doc and packed:
        from megatron_lang.data.objectives import DocumentSegments

        train = DocumentSegments(train, eod)
        valid = {name: DocumentSegments(ds, eod) for name, ds in valid.items()}
    return TrainData(train, valid, [s.name for s in spec.sources], eod)


def build_chat_data(cfg: JobConfig, tokenizer_dir: str | None) -> TrainData:
    """Instruction tuning: packed conversations of ``data.chat`` (and ``data.chat_valid``)."""
    from megatron_lang.data.chat.dataset import ChatSFTDataset

    d = cfg.data
    eod, vocab = tokenizer_ids(tokenizer_dir)
    segments = cfg.model.attention == "packed"
    train = ChatSFTDataset(
        d.chat,
        d.seq_length,
        pad_id=eod,
        seed=cfg.train.seed,
        length=cfg.train.steps * d.global_batch_size,
        segments=segments,
    )
    _check_chat_ids(train, vocab)
    valid = {}
    if d.chat_valid:
        valid["chat"] = ChatSFTDataset(
            d.chat_valid,
            d.seq_length,
            pad_id=eod,
            shuffle=False,
            segments=segments,
            pad_to=d.global_batch_size,
        )
        _check_chat_ids(valid["chat"], vocab)
    log.info(
        "chat data %s: %d packed samples (%d conversations, %d trained tokens), %d steps = "
        "%.3g epochs",
        d.chat,
        train.samples,
        train.report["conversations"]["kept"],
        train.report["tokens"]["trained"],
        cfg.train.steps,
        cfg.train.steps * d.global_batch_size / train.samples,
    )
    return TrainData(train, valid, ["chat"], eod)


def _check_chat_ids(ds, vocab: int) -> None:
    import numpy as np

    from megatron_lang.data.chat.preprocess import TOKENS_NAME
    from megatron_lang.data.indexed import read_index
    from megatron_lang.training.build import StartupError

    prefix = ds.folder / TOKENS_NAME
    ids = np.memmap(f"{prefix}.bin", dtype=read_index(prefix).dtype, mode="r")
    largest = int(ids.max()) if len(ids) else 0
    if largest >= vocab:
        raise StartupError(
            f"{ds.folder}: token id {largest} is outside the tokenizer's vocabulary ({vocab}): "
            "the chat data was built with another tokenizer"
        )


def index_cache_dir(cfg: JobConfig) -> Path:
    """The folder for megatron-core's dataset index cache (see ``data.cache_dir``); writable.

    Raises:
        StartupError: the folder cannot be created or written (named, with the option).
    """
    import tempfile

    from megatron_lang.training.build import StartupError

    d = cfg.data
    if d.cache_dir:
        path, origin = Path(d.cache_dir), "data.cache_dir"
    elif cfg.checkpoint.dir:
        path, origin = Path(cfg.checkpoint.dir) / "index_cache", "checkpoint.dir"
    else:
        path, origin = Path(tempfile.gettempdir()) / "megatron_lang-index-cache", "the default"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise StartupError(
            f"dataset index cache folder {path} (from {origin}) is not writable: {e}; set "
            "data.cache_dir to a writable folder that every rank sees"
        ) from None
    return path


def masking_spec(cfg: JobConfig, tokenizer_dir: str | None, eod: int, vocab: int):
    """The MNTP :class:`~megatron_lang.data.objectives.MaskingSpec` of this job.

    Raises:
        StartupError: the tokenizer has no mask token.
    """
    from megatron_lang.data.objectives import MaskingSpec, tokenizer_special_ids
    from megatron_lang.training.build import StartupError

    o = cfg.objective
    special, mask_id = tokenizer_special_ids(tokenizer_dir, o.mask_token)
    if mask_id is None:
        wanted = f"token {o.mask_token!r}" if o.mask_token else "mask_token (e.g. <mask>)"
        raise StartupError(
            f"objective.mntp_fraction/bidirectional need a mask token, but tokenizer "
            f"{tokenizer_dir} has no {wanted}; add one with tools/preprocess/extend_vocab.py "
            "--mask-token '<mask>' (or train one with tools/preprocess/train_tokenizer.py, "
            "which adds <mask>), or name an existing token with objective.mask_token"
        )
    return MaskingSpec(
        mask_id=mask_id,
        vocab_size=vocab,
        special_ids=frozenset(special | {eod}),
        eod_id=eod,
        fraction=1.0 if o.bidirectional else o.mntp_fraction,
        ratio=o.mask_ratio,
        span_min=o.mask_span_min,
        span_max=o.mask_span_max,
        mask_prob=o.mask_token_prob,
        random_prob=o.random_token_prob,
        document_causal=cfg.data.document_attention,
        seed=cfg.train.seed,
        packed=cfg.model.attention == "packed",
    )


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into a micro-batch.

    A dense ``attention_mask`` becomes ``[b, 1, s, s]``; per-sample ``segments`` become
    THD packing metadata (``cu_seqlens`` ..., see :func:`megatron_lang.data.packing.pack_microbatch`).
    """
    from megatron_lang.data.packing import pack_microbatch

    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [torch.as_tensor(s[key]) for s in samples]
        out[key] = torch.stack(values)
    return pack_microbatch(out)


def step_microbatches(
    dataset: Any,
    first_sample: int,
    global_batch: int,
    micro_batch: int,
    dp_rank: int,
    dp_size: int,
) -> list[dict[str, torch.Tensor]]:
    """This rank's micro-batches of the global batch that starts at ``first_sample``."""
    per_micro = micro_batch * dp_size
    batches = []
    for m in range(global_batch // per_micro):
        start = first_sample + m * per_micro + dp_rank * micro_batch
        batches.append(collate([dataset[i] for i in range(start, start + micro_batch)]))
    return batches


class Prefetcher:
    """This rank's micro-batches of the next step, built in a background thread.

    While step ``k`` runs on the GPU, a worker thread collates the samples of step
    ``k+1`` (reading the memory-mapped datasets, MNTP masking) into pinned host memory
    on CUDA machines, so the copies to the GPU can overlap compute
    (:func:`to_device` per micro-batch, as the schedule asks for it). The batches are
    the ones :func:`step_microbatches` builds (same samples, same order): a run with
    the prefetcher is bitwise the run without it.
    """

    def __init__(
        self,
        dataset: Any,
        global_batch: int,
        micro_batch: int,
        dp_rank: int,
        dp_size: int,
        pin_memory: bool | None = None,
    ):
        from concurrent.futures import ThreadPoolExecutor

        self.dataset, self.global_batch = dataset, global_batch
        self.micro_batch, self.dp_rank, self.dp_size = micro_batch, dp_rank, dp_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="megatron-lang-data")
        self._next: tuple[int, Any] | None = None

    def _build(self, first_sample: int) -> list[dict[str, torch.Tensor]]:
        batches = step_microbatches(
            self.dataset,
            first_sample,
            self.global_batch,
            self.micro_batch,
            self.dp_rank,
            self.dp_size,
        )
        if self.pin_memory:
            batches = [
                {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                for b in batches
            ]
        return batches

    def get(self, first_sample: int) -> tuple[list[dict[str, torch.Tensor]], float]:
        """The micro-batches of the step starting at ``first_sample``, and seconds waited.

        Starts building the following step's batches before returning.
        """
        import time

        t0 = time.perf_counter()
        if self._next is not None and self._next[0] == first_sample:
            batches = self._next[1].result()
        else:  # first step, or the position moved (resume, evaluation order): build now
            if self._next is not None:
                self._next[1].cancel()
            batches = self._build(first_sample)
        waited = time.perf_counter() - t0
        following = first_sample + self.global_batch
        self._next = None
        if following + self.global_batch <= len(self.dataset):
            self._next = (following, self._pool.submit(self._build, following))
        return batches, waited

    def close(self) -> None:
        """Stop the worker thread (a pending build is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._next = None


def to_device(batch: dict[str, Any]) -> dict[str, Any]:
    """Move a micro-batch's tensors to the current GPU (no-op on CPU)."""
    if not torch.cuda.is_available():
        return batch
    return {
        k: v.cuda(non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
