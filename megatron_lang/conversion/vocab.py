"""Hook for a changed vocabulary: remap embedding / LM-head rows to a new tokenizer.

Tokens present in both vocabularies (same token string) keep their old rows;
rows of new tokens come from an :data:`EmbeddingInit` function.  Two simple
ones are here (``mean`` of the old sub-token rows, ``random``); the
vocabulary-adaptation package can register others (FOCUS ...) with
:func:`register_init`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class NewTokenContext:
    """What an embedding-init function gets to fill the rows of new tokens."""

    old_weight: torch.Tensor
    """Old rows ``[V_old, hidden]`` (embedding or LM head)."""
    tensor_name: str
    """HF name of the tensor being remapped (``model.embed_tokens.weight``, ``lm_head.weight``)."""
    new_tokens: list[str]
    """Token strings (new vocabulary) that the old vocabulary lacks."""
    new_ids: list[int]
    """Their ids in the new vocabulary."""
    old_tokenizer: Any
    """HF tokenizer of the old vocabulary."""
    new_tokenizer: Any
    """HF tokenizer of the new vocabulary."""


EmbeddingInit = Callable[[NewTokenContext], torch.Tensor]
"""Returns ``[len(new_tokens), hidden]`` rows for the new tokens."""


def mean_init(ctx: NewTokenContext) -> torch.Tensor:
    """Mean of the old rows of the token's pieces under the old tokenizer.

    The token's text is its decoded form (its string for added tokens).  A token
    whose text the old tokenizer cannot encode gets the mean of all old rows.
    """
    w = ctx.old_weight.float()
    overall = w.mean(dim=0)
    rows = []
    added = ctx.new_tokenizer.get_added_vocab()
    for tok, nid in zip(ctx.new_tokens, ctx.new_ids):
        # added tokens are plain text; byte-level decoding would garble non-ASCII ones
        text = tok if tok in added else ctx.new_tokenizer.decode([nid])
        ids = ctx.old_tokenizer.encode(text, add_special_tokens=False) if text else []
        ids = [i for i in ids if 0 <= i < w.shape[0]]
        rows.append(w[ids].mean(dim=0) if ids else overall)
    if not rows:
        return w.new_zeros((0, w.shape[1])).to(ctx.old_weight.dtype)
    return torch.stack(rows).to(ctx.old_weight.dtype)


def random_init(ctx: NewTokenContext, seed: int = 0) -> torch.Tensor:
    """Normal rows with the old rows' mean and standard deviation (seeded)."""
    w = ctx.old_weight.float()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(ctx.new_tokens), w.shape[1]), generator=gen)
    return (w.mean(dim=0) + noise * w.std()).to(ctx.old_weight.dtype)


_INITS: dict[str, EmbeddingInit] = {"mean": mean_init, "random": random_init}


def register_init(name: str, fn: EmbeddingInit) -> None:
    """Make ``fn`` available as ``--embed-init name``."""
    _INITS[name] = fn


def get_init(name_or_fn: str | EmbeddingInit) -> EmbeddingInit:
    """An init function by name (``mean``, ``random``, registered ones) or itself."""
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _INITS:
        raise ValueError(f"unknown embedding init {name_or_fn!r}; known: {sorted(_INITS)}")
    return _INITS[name_or_fn]


class VocabRemap:
    """Maps old embedding rows to a new tokenizer's vocabulary."""

    def __init__(self, old_tokenizer: Any, new_tokenizer: Any, init: str | EmbeddingInit = "mean"):
        self.old_tokenizer = old_tokenizer
        self.new_tokenizer = new_tokenizer
        self.init = get_init(init)
        old_vocab = old_tokenizer.get_vocab()
        new_vocab = new_tokenizer.get_vocab()
        self.new_size = max(len(new_tokenizer), max(new_vocab.values()) + 1)
        self.kept_new: list[int] = []
        self.kept_old: list[int] = []
        self.new_tokens: list[str] = []
        self.new_ids: list[int] = []
        for tok, nid in sorted(new_vocab.items(), key=lambda kv: kv[1]):
            oid = old_vocab.get(tok)
            if oid is None:
                self.new_tokens.append(tok)
                self.new_ids.append(nid)
            else:
                self.kept_new.append(nid)
                self.kept_old.append(oid)

    def apply(self, old_weight: torch.Tensor, tensor_name: str) -> torch.Tensor:
        """``[new_size, hidden]`` rows: old rows for kept tokens, ``init`` rows for new ones."""
        out = old_weight.new_zeros((self.new_size, old_weight.shape[1]))
        out[self.kept_new] = old_weight[self.kept_old]
        if self.new_ids:
            ctx = NewTokenContext(
                old_weight,
                tensor_name,
                self.new_tokens,
                self.new_ids,
                self.old_tokenizer,
                self.new_tokenizer,
            )
            rows = self.init(ctx)
            if tuple(rows.shape) != (len(self.new_ids), old_weight.shape[1]):
                raise ValueError(
                    f"embedding init returned shape {tuple(rows.shape)}, expected "
                    f"{(len(self.new_ids), old_weight.shape[1])}"
                )
            out[self.new_ids] = rows.to(out.dtype)
        return out
