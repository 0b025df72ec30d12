"""FOCUS-style rows for new tokens (after Dobler & de Melo, 2023).

A new token's row is a convex combination of the old rows of the *overlapping*
tokens (tokens in both vocabularies, which keep their rows anyway), weighted by
how similar the new token is to each of them in an auxiliary embedding space
trained on the target corpus:

1. the corpus (JSONL, one document per line, ``text`` key) is tokenised with
   the NEW tokenizer and a small fastText skip-gram model is trained on the
   token sequences (:func:`train_token_vectors`);
2. for a new token ``n`` with a fastText vector, the similarity to every
   overlapping token ``o`` with a vector is the **cosine** of their vectors.
   Cosine is what FOCUS uses: fastText vector norms grow with token frequency,
   so a dot product would favour frequent tokens over similar ones, and cosine
   scores lie in [-1, 1] whatever the dimension, which keeps sparsemax's
   support (the few tokens within 1 of the best score's threshold) meaningful;
3. the weights are ``sparsemax`` of those scores (:func:`sparsemax`): a
   probability distribution that is exactly zero outside a small set of the
   most similar tokens;
4. the row is ``sum_o w[n, o] * old_row[o]``, computed from a copy of the old
   matrix for the embedding and the (untied) LM head separately.

New tokens without a fastText vector (not in the corpus, or rarer than
``min_count``) fall back to ``mean`` (or ``random``).  The weights depend only on
the tokenizers and the corpus, so :class:`FocusInit` computes them once and
reuses them for the second matrix.

fastText: words are the new tokenizer's token strings (whitespace escaped);
its character n-grams are on, because the fastText build installed here
(``fasttext-numpy2-wheel``) produces garbage or NaN when they are switched off
(``maxn=0``).  Only tokens seen at least ``min_count`` times get a vector: an
n-gram-only vector of an unseen token is not used.  Training runs on one thread
(fastText's Python API fixes its random seed at 0), so the result is
reproducible.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megatron_lang.adaptation.embedding_init import (
    NewTokenContext,
    mean_init,
    old_rows_copy,
    overlap_ids,
    random_init,
)
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo, 2016): the Euclidean projection of ``z`` onto the simplex.

    ``p = max(z - tau, 0)`` with ``tau`` chosen so that ``p`` sums to 1; entries
    more than ``tau`` below the top are exactly zero.
    """
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    shape = [1] * z.dim()
    shape[dim] = z.shape[dim]
    k = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype, device=z.device).view(shape)
    cum = z_sorted.cumsum(dim)
    support = (1 + k * z_sorted) > cum  # prefix of the sorted entries that stays positive
    k_z = support.sum(dim=dim, keepdim=True)
    tau = (cum.gather(dim, k_z - 1) - 1) / k_z.to(z.dtype)
    return torch.clamp(z - tau, min=0)


@dataclass
class FocusOptions:
    """Corpus and fastText settings for :class:`FocusInit`."""

    corpus: str | os.PathLike | list[str | os.PathLike]
    """Target-language corpus: JSONL files or folders (``megatron_lang.data.readers``)."""
    text_key: str = "text"
    """JSON key of the document text."""
    max_documents: int | None = None
    """Read at most this many documents (None: all)."""
    dim: int = 50
    """fastText vector size."""
    epochs: int = 5
    """fastText epochs."""
    window: int = 5
    """fastText context window (tokens each side)."""
    min_count: int = 3
    """Tokens seen fewer times get no vector (they fall back to ``fallback``)."""
    bucket: int = 200_000
    """fastText hash buckets for character n-grams."""
    sample: float = 1e-4
    """fastText sub-sampling threshold of frequent tokens (``t``); raise it for tiny corpora."""
    lr: float = 0.05
    """fastText learning rate; halved and retried (up to 3 times) if training diverges to NaN."""
    fallback: str = "mean"
    """Init for new tokens without a vector: ``mean`` or ``random``."""
    seed: int = 0
    """Seed of the ``random`` fallback."""

    def __post_init__(self) -> None:
        if self.fallback not in ("mean", "random"):
            raise ValueError(
                f"FocusOptions.fallback must be 'mean' or 'random', not {self.fallback!r}"
            )


@dataclass
class FocusWeights:
    """Sparse FOCUS weights of the new tokens over the overlapping tokens."""

    new_ids: list[int]
    """New-vocabulary ids of the new tokens, in the order of :attr:`support`."""
    support: list[tuple[torch.Tensor, torch.Tensor] | None]
    """Per new token: (old ids, weights) with weights > 0 summing to 1, or None (fallback)."""
    overlap_with_vectors: int
    """Overlapping tokens that had a fastText vector (the candidates)."""


def _word(token: str) -> str:
    """A whitespace-free, injective fastText word for a token string."""
    out = []
    for ch in token:
        if ch == "\\" or ch.isspace() or unicodedata.category(ch).startswith("C"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    word = "".join(out)
    return "\\u003c/s>" if word == "</s>" else word  # fastText's end-of-line word


def _iter_texts(opts: FocusOptions) -> Iterator[str]:
    from megatron_lang.data.readers import iter_records

    inputs = opts.corpus if isinstance(opts.corpus, list) else [opts.corpus]
    for n, rec in enumerate(iter_records(list(inputs), keys=[opts.text_key])):
        if opts.max_documents is not None and n >= opts.max_documents:
            return
        yield rec.doc[opts.text_key]


def _fasttext_vectors(path: str, opts: FocusOptions) -> dict[str, np.ndarray]:
    """fastText skip-gram on ``path``; word -> vector (runs in a fresh process)."""
    import fasttext

    lr = opts.lr
    for attempt in range(4):
        try:
            model = fasttext.train_unsupervised(
                path,
                model="skipgram",
                dim=opts.dim,
                epoch=opts.epochs,
                lr=lr,
                ws=opts.window,
                minCount=opts.min_count,
                bucket=opts.bucket,
                t=opts.sample,
                thread=1,
                verbose=0,
            )
            return {w: model.get_word_vector(w) for w in model.get_words()}
        except RuntimeError as e:  # "Encountered NaN": skip-gram diverged
            if "NaN" not in str(e) or attempt == 3:
                raise
            lr /= 2
    raise AssertionError("unreachable")


def _train_fasttext_isolated(path: str, opts: FocusOptions) -> dict[str, np.ndarray]:
    """Run :func:`_fasttext_vectors` in a spawned process.

    The fastText wheel (fasttext-numpy2-wheel 0.9.2) was seen to diverge to NaN
    ("Encountered NaN") on the same input and settings only inside a long-running
    process that had done other work (the test suite), never in a fresh one: its
    result depends on the state of the process's memory. A fresh process per
    training makes the vectors a function of the input alone.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_fasttext_vectors, path, opts).result()


def train_token_vectors(new_tokenizer: Any, opts: FocusOptions) -> dict[int, np.ndarray]:
    """fastText vectors (new id -> vector) of the new tokens seen ``min_count`` times in the corpus.

    Raises:
        ValueError: the corpus yields no tokens.
    """
    id_to_token = {i: t for t, i in new_tokenizer.get_vocab().items()}
    word_to_id: dict[str, int] = {}
    lines = 0
    with tempfile.TemporaryDirectory(prefix="focus-") as tmp:
        path = Path(tmp) / "tokens.txt"
        with path.open("w", encoding="utf-8") as f:
            batch: list[str] = []
            texts = _iter_texts(opts)
            while True:
                batch = [t for _, t in zip(range(256), texts)]
                if not batch:
                    break
                for ids in new_tokenizer(batch, add_special_tokens=False)["input_ids"]:
                    words = []
                    for i in ids:
                        w = _word(id_to_token[i])
                        word_to_id[w] = i
                        words.append(w)
                    if words:
                        f.write(" ".join(words) + "\n")
                        lines += 1
        if not lines:
            raise ValueError(f"FOCUS corpus {opts.corpus} has no text under key {opts.text_key!r}")
        trained = _train_fasttext_isolated(str(path), opts)
    vectors = {word_to_id[w]: v for w, v in trained.items() if w in word_to_id}
    log.info("FOCUS: fastText on %d lines, vectors for %d tokens", lines, len(vectors))
    return vectors


def focus_weights(
    new_ids: list[int],
    overlap_new_ids: list[int],
    overlap_old_ids: list[int],
    vectors: dict[int, np.ndarray],
    chunk: int = 1024,
) -> FocusWeights:
    """Sparsemax over cosine similarities of each new token to the overlapping tokens.

    Args:
        new_ids: new-vocabulary ids of the new tokens.
        overlap_new_ids: new ids of the overlapping tokens (their vectors' keys).
        overlap_old_ids: their old ids (the rows the weights apply to).
        vectors: fastText vectors by new id.
        chunk: new tokens per similarity block (memory: ``chunk x overlap`` floats).
    """
    cand = [(n, o) for n, o in zip(overlap_new_ids, overlap_old_ids) if n in vectors]
    support: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(new_ids)
    have = [k for k, nid in enumerate(new_ids) if nid in vectors]
    if cand and have:
        cand_old = torch.tensor([o for _, o in cand])
        cand_CD = torch.nn.functional.normalize(
            torch.from_numpy(np.stack([vectors[n] for n, _ in cand])).double(), dim=1
        )
        for start in range(0, len(have), chunk):
            ks = have[start : start + chunk]
            new_ND = torch.from_numpy(np.stack([vectors[new_ids[k]] for k in ks])).double()
            sims_NC = torch.nn.functional.normalize(new_ND, dim=1) @ cand_CD.T
            w_NC = sparsemax(sims_NC, dim=1)
            for row, k in enumerate(ks):
                nz = torch.nonzero(w_NC[row]).flatten()
                support[k] = (cand_old[nz], w_NC[row, nz])
    return FocusWeights(list(new_ids), support, len(cand))


class FocusInit:
    """FOCUS :data:`~megatron_lang.conversion.vocab.EmbeddingInit` (see the module doc).

    Example::

        init = FocusInit(FocusOptions(corpus="data/da.jsonl"))
        hf_to_megatron("/models/Llama-3.1-8B", "ckpt/l31-da",
                       new_tokenizer="tok/l31-da", embed_init=init)
    """

    __name__ = "focus"

    def __init__(self, options: FocusOptions):
        self.options = options
        self._cache: dict[tuple, FocusWeights] = {}

    def describe(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (recorded in checkpoint metadata)."""
        d = asdict(self.options)
        c = d["corpus"]
        d["corpus"] = [str(p) for p in c] if isinstance(c, list) else str(c)
        return d

    def weights(self, ctx: NewTokenContext) -> FocusWeights:
        """The FOCUS weights for ``ctx``'s new tokens (trained once, then cached)."""
        key = (id(ctx.old_tokenizer), id(ctx.new_tokenizer), tuple(ctx.new_ids))
        if key not in self._cache:
            vectors = train_token_vectors(ctx.new_tokenizer, self.options)
            ov_new, ov_old = overlap_ids(ctx.old_tokenizer, ctx.new_tokenizer)
            w = focus_weights(ctx.new_ids, ov_new, ov_old, vectors)
            fb = sum(s is None for s in w.support)
            log.info(
                "FOCUS: %d new tokens, %d from %d overlapping tokens with vectors, "
                "%d fall back to %s",
                len(ctx.new_ids),
                len(ctx.new_ids) - fb,
                w.overlap_with_vectors,
                fb,
                self.options.fallback,
            )
            self._cache = {key: w}
        return self._cache[key]

    def __call__(self, ctx: NewTokenContext) -> torch.Tensor:
        """``[len(ctx.new_tokens), hidden]`` rows: FOCUS where possible, else the fallback."""
        w = self.weights(ctx)
        old_VH = old_rows_copy(ctx)
        out_NH = old_VH.new_zeros((len(ctx.new_ids), old_VH.shape[1]))
        missing = [k for k, s in enumerate(w.support) if s is None]
        for k, s in enumerate(w.support):
            if s is not None:
                ids, weights = s
                out_NH[k] = (weights.to(torch.float64) @ old_VH[ids].double()).float()
        if missing:
            sub = NewTokenContext(
                old_VH,
                ctx.tensor_name,
                [ctx.new_tokens[k] for k in missing],
                [ctx.new_ids[k] for k in missing],
                ctx.old_tokenizer,
                ctx.new_tokenizer,
            )
            if self.options.fallback == "mean":
                rows = mean_init(sub)
            else:
                rows = random_init(sub, self.options.seed)
            out_NH[missing] = rows.float()
        return out_NH.to(ctx.old_weight.dtype)


def focus_init(ctx: NewTokenContext, options: FocusOptions) -> torch.Tensor:
    """Function form of :class:`FocusInit` (``functools.partial(focus_init, options=...)``).

    Trains fastText on every call; prefer a :class:`FocusInit` instance, which
    trains once for the embedding and the LM head.
    """
    return FocusInit(options)(ctx)
