"""Packed chat samples (the chat data tool's folder) as training items, epoch by epoch.

Item ``i`` of the run is packed sample ``perm_e[i mod N]`` of epoch ``e = i // N``
(``perm_e`` a permutation seeded by the job seed and the epoch), so ``train.epochs``
passes see every sample once per epoch in a fresh order, the same on every rank and
after a resume (it depends only on ``i``).

Each item holds ``seq_length`` positions: the sample's conversations back to back, then
padding. Every conversation is its own attention segment (``segments``: no attention
to its neighbours; position ids restart), and so is the padding. ``labels[t]`` is the
token after ``t`` *in the same conversation*; ``loss_mask[t]`` is the stored mask of that
next token (1 where it is a trained answer token), 0 at the last position of every
conversation and in the padding -- so no conversation is ever trained to predict the
start of the next.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

SALT = 0x53465421  # "SFT!": keeps the epoch order apart from other uses of the job seed


class ChatDataError(ValueError):
    """A chat data folder that is missing, incomplete or does not fit the job."""


def read_report(folder: str | Path) -> dict:
    """``report.json`` of a chat data folder (written last: its presence means complete)."""
    from megatron_lang.data.chat.preprocess import MASK_NAME, REPORT_NAME, TOKENS_NAME

    path = Path(folder)
    report = path / REPORT_NAME
    if not report.is_file():
        raise ChatDataError(
            f"{path} is not a chat data folder (no {REPORT_NAME}): build it with "
            f"tools/preprocess/preprocess_chat.py"
        )
    for name in (TOKENS_NAME, MASK_NAME):
        for ext in (".bin", ".idx"):
            if not (path / f"{name}{ext}").is_file():
                raise ChatDataError(f"{path}: {name}{ext} is missing")
    return json.loads(report.read_text(encoding="utf-8"))


class ChatSFTDataset:
    """Training items of a chat data folder.

    Args:
        folder: output of ``tools/preprocess/preprocess_chat.py``.
        seq_length: positions per item (at least the folder's packing length).
        pad_id: token id of padding positions (never trained, never attended to).
        seed: job seed (epoch order).
        length: items in the run (default: one epoch, unshuffled order).
        shuffle: a fresh order per epoch (validation sets: False).
        segments: carry ``segments`` for packed attention; False: a dense block-causal
            ``attention_mask [1, S, S]`` (``model.attention: dense``, megatron-core's
            convention True = masked out).
        pad_to: validation sets: every sample once, in order, followed by empty items (no
            trained token) up to a multiple of this (the global batch), so that a held-out
            set smaller than a global batch is still evaluated, each sample exactly once.
    """

    def __init__(
        self,
        folder: str | Path,
        seq_length: int,
        pad_id: int,
        seed: int = 1234,
        length: int | None = None,
        shuffle: bool = True,
        segments: bool = True,
        pad_to: int | None = None,
    ) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        from megatron_lang.data.chat.preprocess import MASK_NAME, TOKENS_NAME

        self.folder = Path(folder)
        self.report = read_report(folder)
        packed_at = int(self.report["packing"]["seq_length"])
        if packed_at > seq_length:
            raise ChatDataError(
                f"{folder} was packed into samples of up to {packed_at} tokens, more than "
                f"data.seq_length={seq_length}: rebuild it with --seq-length {seq_length} "
                f"(or raise data.seq_length)"
            )
        self.tokens = IndexedDataset(str(self.folder / TOKENS_NAME))
        self.masks = IndexedDataset(str(self.folder / MASK_NAME))
        if not (
            np.array_equal(self.tokens.sequence_lengths, self.masks.sequence_lengths)
            and np.array_equal(self.tokens.document_indices, self.masks.document_indices)
        ):
            raise ChatDataError(f"{folder}: the token and loss-mask files do not match")
        self.samples = len(self.tokens.document_indices) - 1
        if self.samples == 0:
            raise ChatDataError(f"{folder} holds no packed sample")
        self.seq_length, self.pad_id, self.seed = seq_length, pad_id, seed
        self.length = self.samples if length is None else length
        self.shuffle, self.with_segments = shuffle, segments
        self.padded = pad_to is not None
        if self.padded:
            if shuffle or length is not None:
                raise ValueError("pad_to is for unshuffled validation sets of one pass")
            self.length = -(-self.samples // pad_to) * pad_to

    def __len__(self) -> int:
        return self.length

    @lru_cache(maxsize=4)  # noqa: B019 - one dataset per run; a few epochs' orders
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.samples)
        return np.random.default_rng([SALT, self.seed, epoch]).permutation(self.samples)

    def sample_of(self, index: int) -> int:
        """The packed sample that item ``index`` of the run reads."""
        if not 0 <= index < self.length:
            raise IndexError(f"item {index} of {self.length}")
        return int(self._order(index // self.samples)[index % self.samples])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.padded and self.samples <= index < self.length:
            empty = np.zeros(1, dtype=np.float32)
            one = np.ones(1, dtype=np.int64)
            return build_item(one * self.pad_id, empty, one, self.seq_length, self.pad_id,
                              self.with_segments)  # fmt: skip
        d = self.sample_of(index)
        first, last = int(self.tokens.document_indices[d]), int(self.tokens.document_indices[d + 1])
        lens = self.tokens.sequence_lengths[first:last].astype(np.int64)
        ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in self.tokens[first:last]])
        mask = np.concatenate([np.asarray(x, dtype=np.float32) for x in self.masks[first:last]])
        return build_item(ids, mask, lens, self.seq_length, self.pad_id, self.with_segments)


def build_item(
    ids: np.ndarray,
    mask: np.ndarray,
    lengths: np.ndarray,
    seq_length: int,
    pad_id: int,
    segments: bool = True,
) -> dict[str, Any]:
    """One training item from a packed sample's ids, stored mask and conversation lengths."""
    n, s = len(ids), seq_length
    tokens = np.full(s, pad_id, dtype=np.int64)
    tokens[:n] = ids
    labels = np.full(s, pad_id, dtype=np.int64)
    labels[: n - 1] = ids[1:]
    loss_mask = np.zeros(s, dtype=np.float32)
    loss_mask[: n - 1] = mask[1:]
    ends = np.cumsum(lengths)
    loss_mask[ends - 1] = 0.0  # the last token of a conversation predicts nothing
    labels[ends[:-1] - 1] = pad_id
    seg = np.full(s, len(lengths), dtype=np.int64)  # the padding: a segment of its own
    seg[:n] = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], ends])
    position = np.arange(s, dtype=np.int64) - starts[np.minimum(seg, len(lengths))]
    item = {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(loss_mask),
        "position_ids": torch.from_numpy(position),
        "dataset_id": torch.tensor(0),
    }
    if segments:
        item["segments"] = torch.from_numpy(seg.astype(np.int32))
    else:
        seg_t = torch.from_numpy(seg)
        same = seg_t[:, None] == seg_t[None, :]
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        item["attention_mask"] = (~(same & causal)).unsqueeze(0)
    return item
