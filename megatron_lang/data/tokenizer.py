"""Text tokenizers for preprocessing: gigatoken, HF ``tokenizers`` and ``sentencepiece`` backends.

All backends share one small interface (:class:`TextTokenizer`): batched
encoding straight into a flat token array plus per-document lengths, decode,
vocabulary size and the EOD/BOS ids.  :func:`load_tokenizer` with
``backend="auto"`` uses gigatoken (much faster) only when it loads the
tokenizer *and* gives identical ids to the reference library on a
verification sample; otherwise it falls back to the reference library and
logs why.  The reference is HF ``tokenizers`` for ``tokenizer.json`` and the
``sentencepiece`` library for ``.model`` files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A plain stdlib logger under the ``megatron_lang`` hierarchy (the platform's handler applies once
# ``megatron_lang.platform.logging`` is configured, as the CLIs do).  Importing the platform
# package here would load torch in every preprocessing worker process.
logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gigatoken", "hf", "sentencepiece")

# Fixed part of the verification sample: whitespace runs, digits, accents, scripts, emoji.
VERIFICATION_TEXTS = [
    "Hello world!  Two  spaces,\ttabs\tand\nnew lines.\n\n\nEnd",
    "Rødgrød med fløde på åen; Æbler og øl. Ikkje berre nynorsk: eg, ho, dei.",
    "Numbers 1234567 3.14159 -42 1e10 and dates 2024-06-01.",
    "Ünïcödé: naïve café, Zürich, Kraków, Łódź, Ωμέγα, Привет, 日本語のテキスト, 한국어, عربى",
    "Emoji 👍🏽 and symbols © ® ™ — “quotes” ‘single’ … ½ ∑ ≠",
    "   leading and trailing spaces   ",
    "code: def f(x):\n    return x**2  # comment\r\nwindows line",
]


class TextTokenizer:
    """Common interface of the backends.

    Attributes:
        name: the tokenizer path as given.
        backend: ``"gigatoken"``, ``"hf"`` or ``"sentencepiece"``.
        vocab_size: number of ids (largest id + 1, added tokens included).
        eod_id: end-of-document id, or None when the tokenizer has none.
        bos_id: beginning-of-sequence id, or None.
    """

    name: str
    backend: str
    vocab_size: int
    eod_id: int | None
    bos_id: int | None

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode documents without special tokens.

        Returns:
            ``(tokens, lengths)``: all ids concatenated (uint32/int64) and ids per text.
        """
        raise NotImplementedError

    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Text of a sequence of ids (special tokens kept)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Summary fields: tokenizer, backend, vocab size, EOD/BOS ids."""
        return {
            "tokenizer": self.name,
            "backend": self.backend,
            "vocab_size": self.vocab_size,
            "eod_id": self.eod_id,
            "bos_id": self.bos_id,
        }


def _lists_to_flat(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


class HFTokenizer(TextTokenizer):
    """HF ``tokenizers`` backend (``tokenizer.json``)."""

    backend = "hf"

    def __init__(self, path: Path, eod_token: str | None, bos_token: str | None) -> None:
        from tokenizers import Tokenizer

        self.name = str(path)
        self.json_path = path / "tokenizer.json" if path.is_dir() else path
        self._tok = Tokenizer.from_file(str(self.json_path))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eod, bos = _special_tokens(self.json_path, eod_token, bos_token)
        self.eod_id = self._tok.token_to_id(eod) if eod else None
        self.bos_id = self._tok.token_to_id(bos) if bos else None

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # encode_batch_fast (tokenizers >= 0.21) skips offsets; same ids as encode_batch
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        encodings = encode(texts, add_special_tokens=False)
        return _lists_to_flat([e.ids for e in encodings])

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class SentencePieceTokenizer(TextTokenizer):
    """The ``sentencepiece`` library backend (``.model`` files)."""

    backend = "sentencepiece"

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.name = str(path)
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self._sp.get_piece_size()
        self.eod_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _lists_to_flat(self._sp.encode(texts))

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self._sp.decode([int(i) for i in ids])


class GigatokenTokenizer(TextTokenizer):
    """gigatoken backend; shares EOD/BOS/decoding with the reference tokenizer it was checked against."""

    backend = "gigatoken"

    def __init__(
        self,
        path: Path,
        reference: TextTokenizer | None,
        ids: tuple[int, int | None, int | None] | None = None,
    ) -> None:
        """Args: ``reference`` (the verified library tokenizer) or, in worker processes
        that only encode, ``ids`` = (vocab size, EOD id, BOS id) and no reference."""
        import awkward  # noqa: F401  (imported here, not on the first batch)
        import gigatoken

        self.name = str(path)
        if path.suffix == ".model":
            self._tok = gigatoken.Tokenizer.from_sentencepiece(str(path))
        else:
            self._tok = gigatoken.Tokenizer(str(path / "tokenizer.json" if path.is_dir() else path))
        self._reference = reference
        if reference is not None:
            ids = (reference.vocab_size, reference.eod_id, reference.bos_id)
        assert ids is not None, "need a reference tokenizer or the ids"
        self.vocab_size, self.eod_id, self.bos_id = ids
        self.parallel: bool | None = False

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, np.uint32), np.zeros(0, np.int64)
        layout = self._tok.encode_batch(texts, parallel=self.parallel).layout
        offsets = np.asarray(layout.offsets.data)
        content = np.asarray(layout.content.data)
        return content[offsets[0] : offsets[-1]], np.diff(offsets)

    def encode_arrow(self, column) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode_batch` for a pyarrow string array, without Python strings."""
        import awkward as ak

        buffers = column.buffers()
        offsets = np.frombuffer(
            buffers[1], dtype=np.int32, count=len(column) + 1, offset=column.offset * 4
        )
        data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] else np.zeros(0, np.uint8)
        layout = ak.contents.ListOffsetArray(
            ak.index.Index64(offsets.astype(np.int64)),
            ak.contents.NumpyArray(data, parameters={"__array__": "char"}),
            parameters={"__array__": "string"},
        )
        out = self._tok.encode_batch(ak.Array(layout), parallel=self.parallel).layout
        out_offsets = np.asarray(out.offsets.data)
        content = np.asarray(out.content.data)
        return content[out_offsets[0] : out_offsets[-1]], np.diff(out_offsets)

    @property
    def reference(self) -> TextTokenizer:
        """The reference library tokenizer (loaded on first use in workers)."""
        if self._reference is None:
            path = Path(self.name)
            kind = "sentencepiece" if path.suffix == ".model" else "hf"
            self._reference = _load(path, kind, None, None)
        return self._reference

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.reference.decode(ids)


def _special_tokens(
    json_path: Path, eod_token: str | None, bos_token: str | None
) -> tuple[str | None, str | None]:
    """EOD/BOS token strings: explicit, else ``tokenizer_config.json``, else common names."""
    config_path = json_path.parent / "tokenizer_config.json"
    config: dict = {}
    if config_path.is_file():
        config = json.loads(config_path.read_text())

    def token(value: object) -> str | None:
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else None

    added = [t["content"] for t in json.loads(json_path.read_text()).get("added_tokens", [])]
    eod = eod_token or token(config.get("eos_token"))
    if eod is None:
        names = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")
        eod = next((t for t in names if t in added), None)
    bos = bos_token or token(config.get("bos_token"))
    if bos is None:
        bos = next((t for t in ("<|begin_of_text|>", "<s>", "<bos>") if t in added), None)
    return eod, bos


def _verify(fast: TextTokenizer, reference: TextTokenizer, sample: list[str]) -> str | None:
    """None when both give identical ids on every text, else a description of the first mismatch."""
    texts = VERIFICATION_TEXTS + [t for t in sample if t]
    ft, fl = fast.encode_batch(texts)
    rt, rl = reference.encode_batch(texts)
    f_off = np.concatenate(([0], np.cumsum(fl)))
    r_off = np.concatenate(([0], np.cumsum(rl)))
    for i, text in enumerate(texts):
        a = ft[f_off[i] : f_off[i + 1]].astype(np.int64)
        b = rt[r_off[i] : r_off[i + 1]].astype(np.int64)
        if len(a) != len(b) or not np.array_equal(a, b):
            return f"ids differ from the reference on verification text {i} ({text[:40]!r}...)"
    return None


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a worker process needs to rebuild the same tokenizer (picklable)."""

    path: str
    backend: str
    eod_token: str | None = None
    bos_token: str | None = None
    ids: tuple[int, int | None, int | None] | None = None
    """(vocab size, EOD id, BOS id) once known: gigatoken workers then skip the reference."""

    def build(self) -> TextTokenizer:
        """Load the tokenizer with exactly this backend (no verification)."""
        if self.backend == "gigatoken" and self.ids is not None:
            return GigatokenTokenizer(Path(self.path), None, self.ids)
        return _load(Path(self.path), self.backend, self.eod_token, self.bos_token)


def _load(path: Path, backend: str, eod_token: str | None, bos_token: str | None) -> TextTokenizer:
    is_sp = path.suffix == ".model"
    reference: TextTokenizer = (
        SentencePieceTokenizer(path) if is_sp else HFTokenizer(path, eod_token, bos_token)
    )
    if backend == "gigatoken":
        return GigatokenTokenizer(path, reference)
    if backend == "hf" and is_sp:
        raise ValueError(f"{path}: a SentencePiece model needs --backend sentencepiece or auto")
    if backend == "sentencepiece" and not is_sp:
        raise ValueError(f"{path}: --backend sentencepiece needs a SentencePiece .model file")
    return reference


def load_tokenizer(
    path: str | Path,
    backend: str = "auto",
    sample: list[str] | None = None,
    eod_token: str | None = None,
    bos_token: str | None = None,
) -> tuple[TextTokenizer, TokenizerSpec, str]:
    """Load a tokenizer, choosing the backend.

    Args:
        path: HF tokenizer directory or ``tokenizer.json``, or a SentencePiece ``.model``.
        backend: ``auto`` (gigatoken when verified, else the reference library),
            ``gigatoken`` (forced, still verified: a mismatch raises), ``hf`` or
            ``sentencepiece``.
        sample: texts from the corpus added to the verification sample.
        eod_token: override the end-of-document token string (HF tokenizers).
        bos_token: override the BOS token string (HF tokenizers).

    Returns:
        ``(tokenizer, spec, reason)``: the tokenizer, a picklable spec to rebuild it in
        workers, and why this backend was chosen.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer {path} does not exist")
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path} has no tokenizer.json")
    ref_backend = "sentencepiece" if path.suffix == ".model" else "hf"
    if backend in ("hf", "sentencepiece"):
        spec = TokenizerSpec(str(path), backend, eod_token, bos_token)
        return spec.build(), spec, f"{backend} requested"
    reference = _load(path, ref_backend, eod_token, bos_token)
    try:
        fast = GigatokenTokenizer(path, reference)
        problem = _verify(fast, reference, sample or [])
    except Exception as err:  # gigatoken refuses many tokenizers with various errors
        first_line = (str(err).strip().splitlines() or [""])[0]
        fast, problem = None, f"gigatoken cannot load it: {type(err).__name__}: {first_line}"
    if problem is None:
        ids = (fast.vocab_size, fast.eod_id, fast.bos_id)
        spec = TokenizerSpec(str(path), "gigatoken", eod_token, bos_token, ids)
        return fast, spec, "gigatoken loaded it and matched the reference ids on the sample"
    if backend == "gigatoken":
        raise ValueError(f"--backend gigatoken: {problem}")
    reason = f"{problem}; using {ref_backend}"
    logger.warning("tokenizer %s: %s", path, reason)
    spec = TokenizerSpec(str(path), ref_backend, eod_token, bos_token)
    return reference, spec, reason
