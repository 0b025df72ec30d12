"""Rows for new tokens: ``mean`` of the old sub-token rows, ``random``, and the shared helpers.

A new vocabulary keeps the rows of tokens it shares with the old one (same token
string, see :class:`megatron_lang.conversion.vocab.VocabRemap`); the functions
here make the rows of the tokens it adds.  Each one is an
:data:`~megatron_lang.conversion.vocab.EmbeddingInit`: it gets a
:class:`NewTokenContext` for one matrix (the
input embedding or the LM head, called once for each, so an untied model gets
both computed from their own old rows) and returns ``[n_new, hidden]`` rows.

Every method reads from a private float32 copy of the old matrix and returns a
fresh tensor: nothing is written over rows that may still be sources, which
matters because a new vocabulary can reorder ids (a new token's id may be the
old id of another token whose row some other new token is built from).

What a token "is" (its bytes)
-----------------------------
A vocabulary entry is not text.  Byte-level BPE (GPT-2, Llama-3, SmolLM2,
Qwen) stores bytes through a byte-to-unicode table (``Ġhus`` is the bytes of
``" hus"``, ``Ã¦`` is the two UTF-8 bytes of ``"æ"``, and ``Ã`` alone is an
incomplete UTF-8 sequence); SentencePiece stores a space as ``▁`` and, with byte
fallback, single bytes as ``<0xC3>``.  :func:`token_bytes` turns an entry back
into its exact bytes.  Decoding a token with ``tokenizer.decode`` instead loses
information: a partial UTF-8 token becomes U+FFFD, and SentencePiece decoders
drop a token's leading space.

How the old tokenizer sees those bytes
--------------------------------------
:func:`old_token_ids` tokenises the bytes with the old tokenizer's own
pre-tokenizer and model, but without the parts that make sense only for whole
documents: the SentencePiece dummy prefix (``"hus"`` is a word-internal piece
and must not become ``"▁hus"``; ``" hus"`` must become ``"▁hus"``, not
``"▁▁hus"``) and special tokens added around the text.  Complete characters go
through the pre-tokenizer; bytes that are not complete UTF-8 characters map to
the old tokenizer's byte tokens (byte-level: the byte's character, SentencePiece
byte fallback: ``<0xNN>``) and are dropped where it has none.  The old
tokenizer's added tokens are matched first, as its own pipeline would.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


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


SPACE_MARKER = "▁"
"""SentencePiece's space marker (U+2581)."""
BYTE_TOKEN_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
"""SentencePiece byte-fallback tokens (``<0xC3>``)."""


@cache
def byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE table: each byte value -> the printable character that stores it.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``,
    ``®``..``ÿ``) stand for themselves; the other 68 bytes, in increasing order,
    are stored as U+0100, U+0101, ... (so a space, byte 32, is ``Ġ`` = U+0120).
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


@cache
def unicode_to_byte() -> dict[str, int]:
    """Inverse of :func:`byte_to_unicode`."""
    return {c: b for b, c in byte_to_unicode().items()}


def _components(spec: Any) -> list[dict[str, Any]]:
    """Flatten a tokenizers JSON component (``Sequence`` nests others) into a list."""
    if not isinstance(spec, dict):
        return []
    out = [spec]
    for key in ("pretokenizers", "normalizers", "decoders"):
        for sub in spec.get(key) or []:
            out += _components(sub)
    return out


class TokenizerView:
    """What the init functions need to know about an HF tokenizer, computed once.

    Args:
        tokenizer: an HF (fast) tokenizer; without a ``tokenizers`` backend it is
            treated as plain text (``encode``).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.added: dict[str, int] = dict(tokenizer.get_added_vocab())
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        spec = json.loads(self.backend.to_str()) if self.backend is not None else {}
        parts = [
            p
            for key in ("normalizer", "pre_tokenizer", "decoder")
            for p in _components(spec.get(key))
        ]
        types = {p.get("type") for p in parts}
        model = spec.get("model") or {}
        self.byte_level = "ByteLevel" in types
        replaces_space = any(
            p.get("type") == "Replace" and p.get("content") == SPACE_MARKER for p in parts
        )
        self.metaspace = not self.byte_level and ("Metaspace" in types or replaces_space)
        self.style = "byte_level" if self.byte_level else "metaspace" if self.metaspace else "plain"
        # legacy SentencePiece conversions put the dummy prefix into the normalizer
        self.normalizer_prepends = any(p.get("type") == "Prepend" for p in parts)
        self.wordpiece_prefix = (
            model.get("continuing_subword_prefix") if model.get("type") == "WordPiece" else None
        )
        unk = model.get("unk_token")
        self.unk_id = self.vocab.get(unk) if isinstance(unk, str) else None
        if model.get("type") == "Unigram" and isinstance(model.get("unk_id"), int):
            self.unk_id = model["unk_id"]
        self.byte_ids = {
            int(m.group(1), 16): i for t, i in self.vocab.items() if (m := BYTE_TOKEN_RE.match(t))
        }
        names = sorted(self.added, key=len, reverse=True)
        self.added_re = re.compile("|".join(map(re.escape, names))) if names else None

    # ---- new side: vocabulary entry -> bytes -------------------------------------------
    def token_bytes(self, token: str) -> bytes:
        """The bytes a vocabulary entry of this tokenizer stands for (see the module doc)."""
        if token in self.added:
            return token.encode("utf-8")
        if self.byte_level:
            u2b = unicode_to_byte()
            out = bytearray()
            for ch in token:
                if ch in u2b:
                    out.append(u2b[ch])
                else:  # not a byte-level character (e.g. a hand-added entry): its UTF-8
                    out += ch.encode("utf-8")
            return bytes(out)
        if self.metaspace:
            m = BYTE_TOKEN_RE.match(token)
            if m and self.byte_ids:
                return bytes([int(m.group(1), 16)])
            return token.replace(SPACE_MARKER, " ").encode("utf-8")
        if self.wordpiece_prefix and token.startswith(self.wordpiece_prefix):
            token = token[len(self.wordpiece_prefix) :]
        return token.encode("utf-8")

    # ---- old side: bytes -> old ids ----------------------------------------------------
    def ids_for_bytes(self, data: bytes) -> list[int]:
        """Old-vocabulary ids covering ``data`` (see the module doc); unknown pieces dropped."""
        text = data.decode("utf-8", errors="surrogateescape")
        items: list[int | str] = []  # added-token ids and model pieces, in order
        raw_before = False
        # runs of complete characters vs runs of stray bytes (surrogate-escaped)
        for run in re.findall(r"[\udc80-\udcff]+|[^\udc80-\udcff]+", text):
            if "\udc80" <= run[0] <= "\udcff":
                raw = bytes(ord(c) - 0xDC00 for c in run)
                if self.byte_level and self.backend is not None:
                    piece = "".join(byte_to_unicode()[b] for b in raw)
                    if items and isinstance(items[-1], str):  # bytes of the same word
                        items[-1] += piece
                    else:
                        items.append(piece)
                else:
                    items += [self.byte_ids[b] for b in raw if b in self.byte_ids]
                raw_before = True
                continue
            new = self._items_for_text(run)
            glue = self.byte_level and raw_before and items and isinstance(items[-1], str)
            if glue and new and isinstance(new[0], str) and not run.startswith(" "):
                items[-1] += new.pop(0)  # continuation of a word that began with stray bytes
            items += new
            raw_before = False
        ids: list[int] = []
        for item in items:
            if isinstance(item, int):
                ids.append(item)
            else:
                ids += [t.id for t in self.backend.model.tokenize(item)]
        return [i for i in ids if i != self.unk_id]

    def _items_for_text(self, text: str) -> list[int | str]:
        items: list[int | str] = []
        pos = 0
        for m in self.added_re.finditer(text) if self.added_re else ():
            items += self._pieces(text[pos : m.start()])
            items.append(self.added[m.group(0)])
            pos = m.end()
        return items + self._pieces(text[pos:])

    def _pieces(self, text: str) -> list[int | str]:
        """Model-input pieces of plain text (or ids, for tokenizers without a backend)."""
        if not text:
            return []
        if self.backend is None or self.style == "plain":
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        backend = self.backend
        if self.metaspace and (self.normalizer_prepends or backend.pre_tokenizer is None):
            # legacy SentencePiece: spaces become markers, no dummy prefix, split before markers
            s = text.replace(" ", SPACE_MARKER)
            return [p for p in re.split(f"(?={SPACE_MARKER})", s) if p]
        s = backend.normalizer.normalize_str(text) if backend.normalizer else text
        pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(s)]
        marker = byte_to_unicode()[32] if self.byte_level else SPACE_MARKER
        if pieces and not text.startswith(" ") and pieces[0].startswith(marker):
            pieces[0] = pieces[0][1:]  # a prefix space the pre-tokenizer added
        return [p for p in pieces if p]


def token_bytes(token: str, tokenizer: Any) -> bytes:
    """The bytes that vocabulary entry ``token`` of ``tokenizer`` stands for.

    ``Ġhus`` -> ``b" hus"``, ``Ã¦`` -> ``"æ".encode()``, ``Ã`` -> ``b"\\xc3"``
    (byte-level BPE); ``▁hus`` -> ``b" hus"``, ``<0xC3>`` -> ``b"\\xc3"``
    (SentencePiece); added tokens -> their text.
    """
    return TokenizerView(tokenizer).token_bytes(token)


def old_token_ids(data: bytes | str, old_tokenizer: Any) -> list[int]:
    """Ids of the old tokenizer's pieces for ``data`` (bytes, or text), as inside a document."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return TokenizerView(old_tokenizer).ids_for_bytes(data)


def source_ids(ctx: NewTokenContext) -> list[list[int]]:
    """For each new token of ``ctx``: the old ids its bytes tokenise to (may be empty)."""
    new_view = TokenizerView(ctx.new_tokenizer)
    old_view = TokenizerView(ctx.old_tokenizer)
    v_old = ctx.old_weight.shape[0]
    out = []
    for tok in ctx.new_tokens:
        ids = old_view.ids_for_bytes(new_view.token_bytes(tok))
        out.append([i for i in ids if 0 <= i < v_old])
    return out


def overlap_ids(old_tokenizer: Any, new_tokenizer: Any) -> tuple[list[int], list[int]]:
    """Tokens in both vocabularies (same string): ``(new_ids, old_ids)``, by new id."""
    old_vocab = old_tokenizer.get_vocab()
    pairs = sorted(
        (nid, old_vocab[t]) for t, nid in new_tokenizer.get_vocab().items() if t in old_vocab
    )
    return [n for n, _ in pairs], [o for _, o in pairs]


def old_rows_copy(ctx: NewTokenContext) -> torch.Tensor:
    """A float32 copy of the old matrix (``[V_old, hidden]``), never the caller's tensor."""
    return ctx.old_weight.detach().to(dtype=torch.float32, copy=True)


def mean_init(ctx: NewTokenContext) -> torch.Tensor:
    """Mean of the old rows of each new token's pieces under the old tokenizer.

    The token's bytes (:func:`token_bytes`: byte-level and ``▁`` markers
    decoded, partial UTF-8 kept as bytes) are tokenised by the old tokenizer as
    inside a document (:func:`old_token_ids`).  A token with no old pieces gets
    the mean of all old rows.

    Returns:
        ``[len(ctx.new_tokens), hidden]`` in the old matrix's dtype.
    """
    old_VH = old_rows_copy(ctx)
    overall_H = old_VH.mean(dim=0)
    rows = [old_VH[ids].mean(dim=0) if ids else overall_H for ids in source_ids(ctx)]
    if not rows:
        return old_VH.new_zeros((0, old_VH.shape[1])).to(ctx.old_weight.dtype)
    return torch.stack(rows).to(ctx.old_weight.dtype)


def matrix_seed(seed: int, tensor_name: str) -> int:
    """Seed for one matrix: ``seed`` combined with the tensor name (embedding != LM head)."""
    return (seed * 1_000_003 + zlib.crc32(tensor_name.encode())) % (2**63)


def random_init(ctx: NewTokenContext, seed: int = 0) -> torch.Tensor:
    """Normal rows fitted to the old matrix: per hidden dimension its mean and std (seeded).

    Each matrix uses its own statistics, and its own stream of random numbers
    (:func:`matrix_seed` of ``seed`` and the tensor name), so an untied LM head
    does not get the same noise as the embedding.
    """
    old_VH = old_rows_copy(ctx)
    gen = torch.Generator().manual_seed(matrix_seed(seed, ctx.tensor_name))
    noise_NH = torch.randn((len(ctx.new_tokens), old_VH.shape[1]), generator=gen)
    std_H = old_VH.std(dim=0) if old_VH.shape[0] > 1 else torch.zeros(old_VH.shape[1])
    return (old_VH.mean(dim=0) + noise_NH * std_H).to(ctx.old_weight.dtype)
