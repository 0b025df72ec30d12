"""Batch builders of the training objectives: causal LM and masked next-token prediction (MNTP).

A hybrid run turns a fraction of its sequences into MNTP samples (NorMistral
trains 90 % causal / 10 % MNTP; LLM2Vec uses MNTP to make a decoder an encoder):

- spans of ``span_min..span_max`` tokens covering about ``ratio`` of the
  maskable tokens are chosen (special tokens -- EOD, BOS, pad, mask, every id
  the tokenizer declares special -- are never masked, nor is position 0, whose
  token no output predicts);
- each span is replaced by the mask token (80 %), by random non-special tokens
  (10 %) or kept (10 %);
- labels stay the original next tokens, so the output at position ``j-1``
  predicts the original token ``j`` (the MNTP label shift); the loss counts only
  positions ``j-1`` whose token ``j`` was masked;
- attention is bidirectional within each document (block-diagonal mask).

The other sequences stay causal (document-causal with ``data.document_attention``).
Every choice is drawn from a numpy ``Generator`` seeded by ``(job seed, global
sample index)``, so it is the same on every TP/PP rank and after a resume.

Attention masks follow megatron-core's convention: ``True`` = masked out, one
``[1, S, S]`` mask per sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SALT = 0x4D4E5450  # "MNTP": keeps these streams apart from other uses of the job seed
MAX_TRIES = 64
"""Start positions tried per span before the sample counts as full."""


@dataclass
class MaskingSpec:
    """Everything the MNTP batch builder needs (tokenizer ids and objective settings)."""

    mask_id: int
    """Id of the mask token."""
    vocab_size: int
    """Tokenizer vocabulary size (random replacements are drawn below it)."""
    special_ids: frozenset[int]
    """Ids that are never masked nor drawn as random replacements (the mask id included)."""
    eod_id: int
    """End-of-document id (separates documents packed into one sample)."""
    fraction: float = 0.1
    """Probability that a sequence becomes an MNTP sample (1.0: all of them)."""
    ratio: float = 1 / 6
    """Target share of a sample's maskable tokens that are masked."""
    span_min: int = 1
    """Shortest span."""
    span_max: int = 3
    """Longest span."""
    mask_prob: float = 0.8
    """Share of spans replaced by the mask token."""
    random_prob: float = 0.1
    """Share of spans replaced by random tokens (the rest are kept)."""
    document_causal: bool = False
    """Causal samples also get no attention across documents."""
    seed: int = 1234
    """Job seed."""
    packed: bool = False
    """Items carry ``segments [S]`` (see :mod:`megatron_lang.data.packing`) instead of a
    dense ``attention_mask [1, S, S]``; the masking itself is the same."""
    random_ids: np.ndarray = field(init=False, repr=False)
    """Ids a random replacement draws from (all non-special ids)."""

    def __post_init__(self) -> None:
        self.special_ids = frozenset(int(i) for i in self.special_ids) | {self.mask_id}
        ids = np.arange(self.vocab_size, dtype=np.int64)
        self.random_ids = ids[~np.isin(ids, np.fromiter(self.special_ids, np.int64))]
        if not 1 <= self.span_min <= self.span_max:
            raise ValueError(
                f"need 1 <= span_min <= span_max, got {self.span_min}, {self.span_max}"
            )


@dataclass
class MaskedTokens:
    """The result of :func:`mask_tokens` for one sample."""

    inputs: np.ndarray
    """Corrupted input ids ``[S]``."""
    masked: np.ndarray
    """Bool ``[S]``: input position was chosen (whatever its replacement)."""
    spans: list[tuple[int, int]]
    """``(start, length)`` of each span."""
    kinds: list[str]
    """Replacement of each span: ``mask``, ``random`` or ``keep``."""


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of global sample ``index`` (same on every rank and after a resume)."""
    return np.random.default_rng([SALT, int(seed), int(index)])


def is_mntp_sample(rng: np.random.Generator, fraction: float) -> bool:
    """Whether the sample of ``rng`` is an MNTP sample (first draw of its generator)."""
    draw = rng.random()
    return fraction >= 1.0 or draw < fraction


def maskable(tokens_S: np.ndarray, special_ids: frozenset[int]) -> np.ndarray:
    """Bool ``[S]``: positions that may be masked (not special, not padding, not position 0)."""
    tokens_S = np.asarray(tokens_S, dtype=np.int64)
    ok_S = tokens_S >= 0
    if special_ids:
        ok_S &= ~np.isin(tokens_S, np.fromiter(special_ids, np.int64))
    if len(ok_S):
        ok_S[0] = False
    return ok_S


def choose_spans(
    maskable_S: np.ndarray, ratio: float, span_min: int, span_max: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Non-adjacent spans of maskable positions covering about ``ratio`` of them.

    Span lengths are drawn uniformly from ``span_min..span_max``; a length keeps
    its value while its start is redrawn (so the length distribution stays
    uniform); spans never touch, so each is one contiguous run. Coverage ends at
    the first span that reaches ``round(ratio * n_maskable)`` (overshoot at most
    ``span_max - 1``), or earlier when no place fits.
    """
    candidates = np.flatnonzero(maskable_S)
    target = int(round(ratio * len(candidates)))
    blocked_S = ~np.asarray(maskable_S, dtype=bool)
    n, covered, spans = len(blocked_S), 0, []
    while covered < target:
        length = int(rng.integers(span_min, span_max + 1))
        for _ in range(MAX_TRIES):
            start = int(candidates[rng.integers(len(candidates))])
            if start + length <= n and not blocked_S[start : start + length].any():
                break
        else:
            return spans
        spans.append((start, length))
        blocked_S[max(start - 1, 0) : start + length + 1] = True
        covered += length
    return spans


def mask_tokens(tokens_S: np.ndarray, spec: MaskingSpec, rng: np.random.Generator) -> MaskedTokens:
    """Choose spans and replace them (mask token / random tokens / kept)."""
    inputs_S = np.array(tokens_S, dtype=np.int64, copy=True)
    spans = choose_spans(
        maskable(inputs_S, spec.special_ids), spec.ratio, spec.span_min, spec.span_max, rng
    )
    masked_S = np.zeros(len(inputs_S), dtype=bool)
    kinds = []
    for start, length in spans:
        masked_S[start : start + length] = True
        draw = rng.random()
        if draw < spec.mask_prob:
            inputs_S[start : start + length] = spec.mask_id
            kinds.append("mask")
        elif draw < spec.mask_prob + spec.random_prob:
            inputs_S[start : start + length] = rng.choice(spec.random_ids, size=length)
            kinds.append("random")
        else:
            kinds.append("keep")
    return MaskedTokens(inputs_S, masked_S, spans, kinds)


def mntp_loss_mask(masked_S: np.ndarray) -> np.ndarray:
    """Float ``[S]``: 1 at ``j-1`` for every masked input position ``j`` (MNTP label shift)."""
    loss_S = np.zeros(len(masked_S), dtype=np.float32)
    loss_S[:-1] = masked_S[1:]
    return loss_S


def document_ids(tokens_S: np.ndarray, eod_id: int) -> np.ndarray:
    """Document index of each position; an EOD belongs to the document it ends."""
    tokens_S = np.asarray(tokens_S)
    ids_S = np.zeros(len(tokens_S), dtype=np.int64)
    ids_S[1:] = np.cumsum(tokens_S[:-1] == eod_id)
    return ids_S


def attention_mask(doc_ids_S: np.ndarray, bidirectional: bool, per_document: bool) -> torch.Tensor:
    """megatron-core attention mask ``[1, S, S]`` (True = masked out).

    Args:
        doc_ids_S: document index per position (:func:`document_ids`).
        bidirectional: full attention within each document (block-diagonal).
        per_document: causal attention that also stops at document boundaries
            (ignored when ``bidirectional``, which is always per document).
    """
    doc_S = torch.as_tensor(doc_ids_S)
    same_SS = doc_S[:, None] == doc_S[None, :]
    if bidirectional:
        allowed_SS = same_SS
    else:
        n = len(doc_S)
        allowed_SS = torch.ones(n, n, dtype=torch.bool).tril()
        if per_document:
            allowed_SS &= same_SS
    return (~allowed_SS).unsqueeze(0)


def apply_objective(item: dict[str, Any], index: int, spec: MaskingSpec) -> dict[str, Any]:
    """The training sample of global index ``index`` under the hybrid objective.

    Args:
        item: a GPT dataset item (``tokens``, ``labels``, ``loss_mask``,
            ``position_ids``, optionally ``attention_mask`` and ``dataset_id``).
        index: the sample's global index (seeds its masking).
        spec: objective settings and token ids.

    Returns:
        A new item: for MNTP samples corrupted ``tokens``, the original ``labels``,
        a ``loss_mask`` at the shifted masked positions and a block-diagonal
        ``attention_mask``; for causal samples the item with a causal
        (document-causal) ``attention_mask``; plus ``mntp`` (1 or 0). With
        ``spec.packed`` the attention is given as ``segments`` (document index per
        position where attention stops at documents) instead of the dense mask.
    """
    out = dict(item)
    tokens_S = np.asarray(item["tokens"], dtype=np.int64)
    doc_S = document_ids(tokens_S, spec.eod_id)
    rng = sample_rng(spec.seed, index)
    if is_mntp_sample(rng, spec.fraction):
        result = mask_tokens(tokens_S, spec, rng)
        out["tokens"] = torch.from_numpy(result.inputs)
        out["loss_mask"] = torch.from_numpy(mntp_loss_mask(result.masked))
        bidirectional, per_document = True, True
    else:
        bidirectional, per_document = False, spec.document_causal
    out["mntp"] = torch.tensor(int(bidirectional), dtype=torch.int64)
    if spec.packed:
        out.pop("attention_mask", None)
        out["segments"] = torch.from_numpy(segment_ids(doc_S, per_document))
    else:
        out["attention_mask"] = attention_mask(doc_S, bidirectional, per_document)
    return out


def segment_ids(doc_ids_S: np.ndarray, per_document: bool) -> np.ndarray:
    """Int32 ``[S]`` attention segments: the document index, or one segment for the sample."""
    if per_document:
        return np.asarray(doc_ids_S, dtype=np.int32)
    return np.zeros(len(doc_ids_S), dtype=np.int32)


class DocumentSegments:
    """A GPT dataset whose items carry per-document ``segments`` (``data.document_attention``
    with packed attention and no objective): causal attention within each document."""

    def __init__(self, dataset: Any, eod_id: int) -> None:
        self.dataset, self.eod_id = dataset, eod_id

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        out = dict(self.dataset[index])
        out.pop("attention_mask", None)
        doc_S = document_ids(np.asarray(out["tokens"], dtype=np.int64), self.eod_id)
        out["segments"] = torch.from_numpy(segment_ids(doc_S, True))
        return out


class ObjectiveDataset:
    """A GPT dataset whose items go through :func:`apply_objective` by their index."""

    def __init__(self, dataset: Any, spec: MaskingSpec) -> None:
        self.dataset, self.spec = dataset, spec

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return apply_objective(self.dataset[index], int(index), self.spec)


# ---------------------------------------------------------------- tokenizer ids
def _token(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_special_ids(
    path: str | Path, mask_token: str | None = None
) -> tuple[set[int], int | None]:
    """``(special ids, mask id or None)`` of a tokenizer folder, ``tokenizer.json`` or ``.model``.

    HF: added tokens flagged special plus the ``*_token`` entries of
    ``tokenizer_config.json``; the mask token is ``mask_token`` (argument), else
    the config's ``mask_token``, else an added ``<mask>``. SentencePiece: control
    and unknown pieces; the mask token is the argument or ``<mask>`` when it is a piece.
    """
    path = Path(path)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        models = sorted(path.glob("*.model"))
        if models:
            path = models[0]
    if path.suffix == ".model":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(path))
        special = {i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
        name = mask_token or "<mask>"
        mid = sp.piece_to_id(name)
        found = mid if sp.id_to_piece(mid) == name and not sp.is_unknown(mid) else None
        return special | ({found} if found is not None else set()), found
    json_path = path / "tokenizer.json" if path.is_dir() else path
    added = json.loads(json_path.read_text()).get("added_tokens", [])
    by_name = {t["content"]: int(t["id"]) for t in added}
    special = {int(t["id"]) for t in added if t.get("special", False)}
    config_path = json_path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(json_path))
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token"):
        name = _token(config.get(key))
        if name is not None and tok.token_to_id(name) is not None:
            special.add(int(tok.token_to_id(name)))
    name = (
        mask_token
        or _token(config.get("mask_token"))
        or ("<mask>" if "<mask>" in by_name else None)
    )
    mid = tok.token_to_id(name) if name else None
    if mid is not None:
        special.add(int(mid))
    return special, mid
