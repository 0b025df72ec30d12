"""Tokenizer files shared by training and vocabulary extension.

* :func:`atomic_output_dir`: write a tokenizer folder under a temporary name and
  rename it into place only when complete, so a failed run leaves nothing that
  looks like a tokenizer.
* :func:`sentencepiece_to_tokenizers`: an HF ``tokenizers`` pipeline that gives the
  same ids as the ``sentencepiece`` library for a BPE ``ModelProto`` (merges derived
  from the piece scores, ``add_dummy_prefix`` as a ``Prepend("▁")`` normaliser, byte
  fallback).  transformers 5's own ``LlamaTokenizer`` conversion uses a ``Metaspace``
  pre-tokenizer and differs from ``sentencepiece`` on leading and repeated spaces
  (e.g. ``" x  y "``), so we build the pipeline ourselves and check it in the tests.
* :func:`write_hf_files`: ``tokenizer.json`` + ``tokenizer_config.json`` loadable
  by ``transformers.AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_lang.platform import files
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)

# sentencepiece ModelProto.SentencePiece.Type values
SP_NORMAL, SP_UNKNOWN, SP_CONTROL, SP_USER_DEFINED, SP_UNUSED, SP_BYTE = 1, 2, 3, 4, 5, 6
SP_BPE = 2  # TrainerSpec.ModelType.BPE


class TokenizerError(ValueError):
    """Bad tokenizer input or options; the message names the file or option."""


def atomic_output_dir(output_dir: str | Path, overwrite: bool = False):
    """:func:`megatron_lang.platform.files.atomic_output_dir` for tokenizer folders.

    An existing empty folder may be the output; an existing non-empty one is a
    :class:`TokenizerError` unless ``overwrite``.
    """
    return files.atomic_output_dir(output_dir, overwrite, allow_empty=True, error=TokenizerError)


def load_sp_proto(path: str | Path):
    """The ``ModelProto`` of a SentencePiece ``.model`` file.

    Raises:
        TokenizerError: the file is missing or is not a SentencePiece model.
    """
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as pb

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: no such SentencePiece model file")
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError as err:
        raise TokenizerError(f"{path}: not a SentencePiece model ({err})") from err
    if not proto.pieces:
        raise TokenizerError(f"{path}: not a SentencePiece model (no pieces)")
    return proto


def sp_merges(proto) -> list[tuple[str, str]]:
    """BPE merges equivalent to a SentencePiece BPE model's piece scores.

    Every normal piece of two or more characters yields one merge per split into two
    normal pieces; merges are ordered by the merged piece's score (highest first),
    then by piece id, then by the ids of the two halves.
    """
    ids = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece for p in proto.pieces if p.type == SP_NORMAL}
    ranked = []
    for i, p in enumerate(proto.pieces):
        s = p.piece
        if p.type != SP_NORMAL or len(s) < 2:
            continue
        splits = [(s[:k], s[k:]) for k in range(1, len(s)) if s[:k] in normal and s[k:] in normal]
        splits.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
        ranked.extend((-p.score, i, j, lr) for j, lr in enumerate(splits))
    ranked.sort()
    return [r[3] for r in ranked]


def sentencepiece_to_tokenizers(proto):
    """An HF ``tokenizers.Tokenizer`` with the ids of the SentencePiece BPE ``proto``.

    Raises:
        TokenizerError: the model is not BPE, or uses a normalisation that the
            conversion does not reproduce.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    if proto.trainer_spec.model_type != SP_BPE:
        raise TokenizerError("only SentencePiece BPE models are supported (model_type BPE)")
    spec = proto.normalizer_spec
    if spec.remove_extra_whitespaces or spec.name not in ("identity", ""):
        raise TokenizerError(
            f"SentencePiece normaliser {spec.name!r} (remove_extra_whitespaces="
            f"{spec.remove_extra_whitespaces}) is not supported; train with the identity rule"
        )
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=sp_merges(proto),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=proto.trainer_spec.byte_fallback,
        )
    )
    steps = [normalizers.Replace(" ", "▁")]
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend("▁"))
        decode.append(decoders.Strip(" ", 1, 0))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence(decode)
    special = [p.piece for p in proto.pieces if p.type in (SP_UNKNOWN, SP_CONTROL)]
    user = [p.piece for p in proto.pieces if p.type == SP_USER_DEFINED]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if user:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return tok


def write_hf_files(
    out_dir: Path,
    tokenizer,
    specials: dict[str, str | None],
    tokenizer_class: str = "PreTrainedTokenizerFast",
    extra: dict | None = None,
) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (deterministic bytes).

    Args:
        out_dir: folder to write into.
        tokenizer: a ``tokenizers.Tokenizer``.
        specials: ``{"bos_token": "<s>", "eos_token": ..., "pad_token": ...,
            "mask_token": ..., "unk_token": ...}``; None values are left out.
        tokenizer_class: the ``tokenizer_class`` that transformers instantiates.
        extra: more ``tokenizer_config.json`` fields.
    """
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {"tokenizer_class": tokenizer_class, "clean_up_tokenization_spaces": False}
    config |= {k: v for k, v in specials.items() if v is not None}
    config |= {"model_max_length": 1_000_000_000} | (extra or {})
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
