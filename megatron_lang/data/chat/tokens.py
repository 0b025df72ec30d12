"""Rendered conversations → token ids and loss masks, fast: gigatoken with byte offsets.

The reference is the HF ``tokenizers`` backend with character offsets
(:meth:`.render.ChatRenderer.encode_hf`).  For a byte-level BPE tokenizer every id is a
fixed byte string, so a token's position in the text needs no offsets from the
tokenizer: the cumulative byte lengths of the ids give each token's first and last
byte, and the trained character spans are converted to bytes.  A token is trained when
its first byte lies in a trained span; that is the same as "its first character lies in
it", since a span starts and ends on character boundaries.  gigatoken gives the ids
(several times faster than ``tokenizers``), and numpy the masks of a whole block at once.

Exactness guards, per conversation (anything else is re-encoded with HF):

* SmolLM2's vocabulary (like several byte-level ones) lacks the tokens of a few bytes
  (control characters, bytes never valid in UTF-8); HF silently drops such bytes,
  gigatoken refuses the vocabulary.  gigatoken gets a copy with those byte tokens added
  at ids >= the real vocabulary size; a conversation whose ids contain one goes to HF.
* The bytes of the ids must concatenate to the text's bytes (checked by decoding the
  whole block and by the per-conversation byte counts).

:func:`choose_encoder` uses gigatoken only when it loads and gives the same ids, masks,
straddling counts and end-of-turn ids as HF on a verification sample (fixed texts with
Danish letters, emoji, control bytes, whitespace, plus conversations from the input).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "gigatoken")

# Conversation contents for the verification sample (fixed part); the input adds more.
VERIFICATION_CONTENTS = [
    ("Oversæt: «Rødgrød med fløde på åen.»", "Æbler, øl og blåbær — på dansk: æøå ÆØÅ."),
    ("Emoji 👍🏽 and 日本語, Ωμέγα, Привет", "Svar: 👍🏽🎉 ✓ … ½ ≠ “citat”"),
    ("  leading\tand trailing  \n\n", "code:\n    def f(x):\r\n        return x**2  # ok\n"),
    ("control \x04 byte and \x01\x1f\x7f", "answer with \x06 and \x1d inside"),
    ("Numbers 1234567 3.14159 -42", "1e10 2024-06-01 00:00"),
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map of byte-level BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@dataclass
class FlatEncoding:
    """A batch of tokenised conversations, flat."""

    ids: np.ndarray  # int64, all conversations concatenated
    mask: np.ndarray  # uint8, same length
    lengths: np.ndarray  # int64, tokens per conversation
    straddling: np.ndarray  # int64, per conversation
    turn_end_ids: np.ndarray  # int64, the last trained token's id per span, -1 for none
    span_conv: np.ndarray  # int64, the conversation of each span


class ByteLevelEncoder:
    """gigatoken on a byte-level BPE ``tokenizer.json`` (with missing byte tokens added).

    Raises:
        ValueError: the tokenizer is not byte-level BPE (then HF stays in use).
    """

    def __init__(self, hf_backend) -> None:
        import gigatoken

        config = json.loads(hf_backend.to_str())
        model = config.get("model") or {}
        if model.get("type") != "BPE" or model.get("byte_fallback"):
            raise ValueError("not a byte-level BPE model")
        if config.get("normalizer") is not None:
            raise ValueError("the tokenizer has a normalizer")
        if (config.get("decoder") or {}).get("type") != "ByteLevel":
            raise ValueError("the decoder is not ByteLevel")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ValueError("the BPE model has subword affixes")
        self.vocab_size = hf_backend.get_vocab_size(with_added_tokens=True)
        vocab = model["vocab"]
        b2u = _bytes_to_unicode()
        missing = [b for b in range(256) if b2u[b] not in vocab]
        for k, b in enumerate(missing):
            vocab[b2u[b]] = self.vocab_size + k
        self.missing_bytes = missing
        self._tok = gigatoken.Tokenizer.from_json(json.dumps(config))
        table = self._tok.vocab  # id -> bytes, added tokens included
        size = max(table) + 1
        self._nbytes = np.zeros(size, dtype=np.int64)
        for i, b in table.items():
            self._nbytes[i] = len(b)
        # Every HF id must have the same bytes here (added tokens: their content).
        hf_vocab = hf_backend.get_vocab(with_added_tokens=True)
        added = {t.content for t in hf_backend.get_added_tokens_decoder().values()}
        u2b = {c: b for b, c in b2u.items()}
        for token, i in hf_vocab.items():
            want = token.encode() if token in added else bytes(u2b.get(c, 0) for c in token)
            if i >= size or table.get(i) != want:
                raise ValueError(f"id {i} ({token!r}) has other bytes in gigatoken")

    def encode(self, texts: list[str], spans: list[list[tuple[int, int]]]):
        """Flat ids and masks, and the indices of conversations that need HF instead.

        Returns:
            ``(encoding, fallback)``: a :class:`FlatEncoding` of every conversation (the
            ones in ``fallback`` carry gigatoken's ids, to be replaced) and a sorted
            int64 array of conversation indices to re-encode with HF.
        """
        raw = [t.encode() for t in texts]
        n = len(raw)
        layout = self._tok.encode_batch(raw, parallel=False).layout
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        ids = np.asarray(layout.content.data)[offsets[0] : offsets[-1]].astype(np.int64)
        offsets = offsets - offsets[0]
        lengths = np.diff(offsets)
        nbytes = self._nbytes[ids]
        text_bytes = np.fromiter(map(len, raw), dtype=np.int64, count=n)
        base = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(text_bytes, out=base[1:])
        cum = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(nbytes, out=cum[1:])
        # Guards: byte tokens the real vocabulary lacks; bytes that do not add up.
        bad = np.zeros(n, dtype=bool)
        marker = np.flatnonzero(ids >= self.vocab_size)
        if len(marker):
            bad[np.searchsorted(offsets, marker, side="right") - 1] = True
        bad |= cum[offsets[1:]] - cum[offsets[:-1]] != text_bytes
        if not bad.any() and self._tok.decode(ids) != b"".join(raw):
            for i in range(n):  # locate the conversation(s); never expected
                if self._tok.decode(ids[offsets[i] : offsets[i + 1]]) != raw[i]:
                    bad[i] = True
        if bad.any():  # their tokens collapse onto their first byte; replaced by HF later
            conv = np.repeat(np.arange(n), lengths)
            nbytes = np.where(bad[conv], 0, nbytes)
            cum[1:] = np.cumsum(nbytes)
            shift = base[:-1] - cum[offsets[:-1]]
            ends = cum[1:] + shift[conv]
        else:
            ends = cum[1:]
        starts = ends - nbytes
        # Trained spans in global byte positions.
        span_s, span_e, span_conv = [], [], []
        for i, (text, conv_spans) in enumerate(zip(texts, spans)):
            b0 = int(base[i])
            ascii_text = len(text) == text_bytes[i]
            for s, e in conv_spans:
                if ascii_text:
                    bs, be = s, e
                else:
                    bs = len(text[:s].encode())
                    be = bs + len(text[s:e].encode())
                span_s.append(b0 + bs)
                span_e.append(b0 + be)
                span_conv.append(i)
        span_s = np.asarray(span_s, dtype=np.int64)
        span_e = np.asarray(span_e, dtype=np.int64)
        span_conv = np.asarray(span_conv, dtype=np.int64)
        if len(span_s) > 1 and not (span_e[:-1] <= span_s[1:]).all():
            raise ValueError("trained spans overlap or are out of order")
        mask = np.zeros(len(ids), dtype=np.uint8)
        straddling = np.zeros(n, dtype=np.int64)
        turn_end_ids = np.full(len(span_s), -1, dtype=np.int64)
        if len(span_s) and len(ids):
            # Tokens [first, stop) of a span: those starting in it (starts are sorted).
            first = np.searchsorted(starts, span_s, side="left")
            stop = np.searchsorted(starts, span_e, side="left")
            edges = np.zeros(len(ids) + 1, dtype=np.int8)
            np.add.at(edges, first, 1)
            np.add.at(edges, stop, -1)
            np.cumsum(edges[:-1], out=mask, dtype=np.uint8)
            before = first - 1  # the last token starting before a span: does it reach in?
            straddles = (before >= 0) & (ends[np.maximum(before, 0)] > span_s)
            np.add.at(straddling, span_conv[straddles], 1)
            has = stop > first
            turn_end_ids[has] = ids[stop[has] - 1]
        encoding = FlatEncoding(ids, mask, lengths, straddling, turn_end_ids, span_conv)
        return encoding, np.flatnonzero(bad)


def splice(fast: FlatEncoding, fallback: np.ndarray, hf: FlatEncoding) -> FlatEncoding:
    """``fast`` with the conversations ``fallback`` replaced by ``hf`` (their encodings, in order)."""
    if not len(fallback):
        return fast
    n = len(fast.lengths)
    offsets = np.concatenate([[0], np.cumsum(fast.lengths)])
    hf_offsets = np.concatenate([[0], np.cumsum(hf.lengths)])
    take = np.ones(n, dtype=bool)
    take[fallback] = False
    slot = np.full(n, -1)
    slot[fallback] = np.arange(len(fallback))
    ids, mask, lengths = [], [], []
    for i in range(n):
        if take[i]:
            a, b, src = offsets[i], offsets[i + 1], fast
        else:
            a, b, src = hf_offsets[slot[i]], hf_offsets[slot[i] + 1], hf
        ids.append(src.ids[a:b])
        mask.append(src.mask[a:b])
        lengths.append(b - a)
    straddling = fast.straddling.copy()
    straddling[fallback] = hf.straddling
    keep_spans = take[fast.span_conv]
    span_conv = np.concatenate([fast.span_conv[keep_spans], fallback[hf.span_conv]])
    turn_ends = np.concatenate([fast.turn_end_ids[keep_spans], hf.turn_end_ids])
    order = np.argsort(span_conv, kind="stable")
    return FlatEncoding(
        np.concatenate(ids),
        np.concatenate(mask),
        np.asarray(lengths, dtype=np.int64),
        straddling,
        turn_ends[order],
        span_conv[order],
    )


def same_encoding(a: FlatEncoding, b: FlatEncoding) -> str | None:
    """None when both are identical, else what differs first."""
    for name in ("lengths", "ids", "mask", "straddling", "span_conv", "turn_end_ids"):
        x, y = getattr(a, name), getattr(b, name)
        if len(x) != len(y) or not np.array_equal(x, y):
            if name in ("ids", "mask") and np.array_equal(a.lengths, b.lengths):
                offsets = np.concatenate([[0], np.cumsum(a.lengths)])
                first = int(np.flatnonzero(x != y)[0])
                conv = int(np.searchsorted(offsets, first, side="right") - 1)
                return f"{name} differ in verification conversation {conv}"
            return f"{name} differ"
    return None
