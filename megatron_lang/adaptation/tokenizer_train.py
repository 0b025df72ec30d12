"""Train a tokenizer on a target-language corpus: byte-level BPE or SentencePiece BPE.

* ``kind="bpe"``: byte-level BPE with HF ``tokenizers`` (GPT-2/Llama-3/SmolLM2
  style: ``ByteLevel`` pre-tokenizer without prefix space, all 256 byte symbols
  in the initial alphabet, so every text round-trips).  gigatoken 0.10 also has
  a BPE trainer (``gigatoken.train_bpe``); on the GIMP Danish manual it gives the
  very same merges (``bench/tokenizer_train.py`` compares them and times both), but it
  prints to stdout and needs the corpus as one bytes buffer, so it is not used.
* ``kind="sentencepiece"``: SentencePiece BPE with byte fallback (Llama-2 /
  Mistral-7B style), identity normalisation, digits split, whitespace kept as is.

Outputs (written to a temporary folder, renamed when complete): ``tokenizer.json``
and ``tokenizer_config.json`` (``AutoTokenizer.from_pretrained`` loads the
folder, bos/eos/pad/mask/unk tokens set), for SentencePiece also
``tokenizer.model``, and ``train_report.json``.  Same input + options give
byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_lang.adaptation.tokenizer_files import (
    TokenizerError,
    atomic_output_dir,
    load_sp_proto,
    sentencepiece_to_tokenizers,
    write_hf_files,
)
from megatron_lang.data.readers import InputError, iter_records
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

KINDS = ("bpe", "sentencepiece")


@dataclass
class TrainConfig:
    """Options of :func:`train_tokenizer`."""

    inputs: list[str]
    """JSONL files (text under ``text_key``), ``.txt`` files or folders of them."""
    output_dir: str
    """Folder to write (must not exist or be empty unless ``overwrite``)."""
    kind: str = "bpe"
    """``"bpe"`` (byte-level BPE, HF tokenizers) or ``"sentencepiece"`` (BPE, byte fallback)."""
    vocab_size: int = 16000
    """Size of the vocabulary, special tokens included."""
    text_key: str = "text"
    """JSON key holding the text."""
    bos_token: str | None = "<s>"
    """Beginning-of-sequence token (None: none)."""
    eos_token: str | None = "</s>"
    """End-of-sequence token; the EOD of the preprocessing tools."""
    pad_token: str | None = "<pad>"
    """Padding token (None: none)."""
    mask_token: str | None = "<mask>"
    """Mask token for masked objectives (None: none)."""
    unk_token: str = "<unk>"
    """SentencePiece only: the unknown piece (id 0; unused with byte fallback)."""
    special_tokens: list[str] = field(default_factory=list)
    """More special tokens, after the ones above."""
    max_docs: int | None = None
    """Use at most this many documents (in input order)."""
    max_chars: int | None = None
    """Stop reading once this many characters were read (whole documents)."""
    min_frequency: int = 2
    """BPE: a pair must occur this often to be merged."""
    character_coverage: float = 0.9999
    """SentencePiece: share of characters covered by pieces (the rest are bytes)."""
    num_threads: int = 1
    """SentencePiece training threads."""
    overwrite: bool = False
    """Replace an existing output folder (once the new one is complete)."""

    def specials(self) -> list[str]:
        """All special tokens in id order (SentencePiece: after ``unk_token``)."""
        named = [self.bos_token, self.eos_token, self.pad_token, self.mask_token]
        out: list[str] = []
        for tok in [t for t in named if t] + list(self.special_tokens):
            if tok not in out:
                out.append(tok)
        return out


def read_texts(
    inputs: list[str], text_key: str = "text", max_docs: int | None = None, max_chars=None
) -> Iterator[str]:
    """Documents of ``inputs`` in order, with the ``max_docs``/``max_chars`` limits.

    Raises:
        TokenizerError: an input is missing or unreadable, or a document is bad.
    """
    if not inputs:
        raise TokenizerError("no input files given (--input)")
    docs = chars = 0
    try:
        for record in iter_records(list(inputs), keys=[text_key]):
            if (max_docs is not None and docs >= max_docs) or (max_chars and chars >= max_chars):
                return
            text = record.doc[text_key]
            docs += 1
            chars += len(text)
            yield text
    except InputError as err:
        raise TokenizerError(str(err)) from err


def _check(config: TrainConfig) -> None:
    if config.kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {config.kind!r} (--type: one of {KINDS})")
    n_special = len(config.specials()) + (config.kind == "sentencepiece")
    minimum = 256 + n_special + 1
    if config.vocab_size < minimum:
        raise TokenizerError(
            f"--vocab-size {config.vocab_size} is too small: the 256 byte symbols and "
            f"{n_special} special tokens need at least {minimum}"
        )


def _train_bpe(texts: list[str], config: TrainConfig, out: Path) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=config.specials(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    write_hf_files(out, tok, _named(config, unk=False))
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True)}


def _sentences(texts: list[str]) -> Iterator[str]:
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line


def _train_sentencepiece(texts: list[str], config: TrainConfig, out: Path) -> dict:
    import io

    import sentencepiece as spm

    specials = config.specials()
    ids = {t: specials.index(t) + 1 for t in (config.bos_token, config.eos_token, config.pad_token)}
    extra = [t for t in specials if t not in (config.bos_token, config.eos_token, config.pad_token)]
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sentences(texts),
            model_writer=model,
            model_type="bpe",
            vocab_size=config.vocab_size,
            byte_fallback=True,
            character_coverage=config.character_coverage,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=1 << 20,
            shuffle_input_sentence=False,
            num_threads=config.num_threads,
            unk_id=0,
            unk_piece=config.unk_token,
            bos_id=ids.get(config.bos_token, -1) if config.bos_token else -1,
            bos_piece=config.bos_token or "<s>",
            eos_id=ids.get(config.eos_token, -1) if config.eos_token else -1,
            eos_piece=config.eos_token or "</s>",
            pad_id=ids.get(config.pad_token, -1) if config.pad_token else -1,
            pad_piece=config.pad_token or "<pad>",
            control_symbols=extra,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise TokenizerError(f"SentencePiece training failed (check --vocab-size): {err}") from err
    path = out / "tokenizer.model"
    path.write_bytes(model.getvalue())
    tok = sentencepiece_to_tokenizers(load_sp_proto(path))
    write_hf_files(out, tok, _named(config, unk=True), extra={"add_bos_token": False})
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True)}


def _named(config: TrainConfig, unk: bool) -> dict[str, str | None]:
    return {
        "bos_token": config.bos_token,
        "eos_token": config.eos_token,
        "pad_token": config.pad_token,
        "mask_token": config.mask_token,
        "unk_token": config.unk_token if unk else None,
    }


def train_tokenizer(config: TrainConfig) -> dict:
    """Train a tokenizer and write its HF-loadable folder.

    Args:
        config: what to train on and how (see :class:`TrainConfig`).

    Returns:
        The report also written to ``train_report.json``: kind, vocab size,
        documents, characters, special tokens with their ids.

    Raises:
        TokenizerError: unknown kind, vocabulary too small, missing/bad input, an
            empty corpus, or an existing output folder; nothing is written then.
    """
    _check(config)
    texts = list(read_texts(config.inputs, config.text_key, config.max_docs, config.max_chars))
    if not texts:
        raise TokenizerError(f"empty corpus: no documents in {', '.join(config.inputs)}")
    chars = sum(len(t) for t in texts)
    logger.info("training %s tokenizer on %d documents (%d chars)", config.kind, len(texts), chars)
    with atomic_output_dir(config.output_dir, config.overwrite) as tmp:
        train = _train_bpe if config.kind == "bpe" else _train_sentencepiece
        result = train(texts, config, tmp)
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
        report = {
            "kind": config.kind,
            "vocab_size": result["vocab_size"],
            "requested_vocab_size": config.vocab_size,
            "documents": len(texts),
            "characters": chars,
            "special_tokens": {t: tok.token_to_id(t) for t in config.specials()},
            "options": {k: v for k, v in asdict(config).items() if k not in ("output_dir",)},
        }
        (tmp / "train_report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    logger.info("wrote %s (vocab %d)", config.output_dir, report["vocab_size"])
    return report
