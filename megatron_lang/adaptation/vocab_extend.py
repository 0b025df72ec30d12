"""Vocabulary extension: V_new = V ⊕ (V′ − V), for HF byte-level BPE and SentencePiece BPE.

The base tokenizer is kept intact: every base token (model vocabulary, added and
special tokens) keeps its id; the tokens of the target-language tokenizer V′
that the base lacks are appended after the base's largest id, in V′'s rank
order (its ids), duplicates skipped.  ``max_new_tokens=N`` keeps the first N.

* **HF byte-level BPE** (``tokenizer.json``): new tokens go into the BPE model's
  vocabulary; V′'s merges are appended after all base merges, in V′'s order, but
  only merges whose two parts *and* result are in the merged vocabulary (a merge
  with an absent part could never fire).  When a new token's parts are missing
  (possible when V′'s ids are not in merge order, or with ``max_new_tokens``),
  the missing intermediate pieces are added first (they count towards N); new
  tokens that are neither produced by a V′ merge nor a single byte symbol are
  unreachable and skipped.  The base's pre-tokenizer, normaliser, decoder and
  post-processor are kept.  Appending merges after the base's can only merge
  further what the base produced, so a text never gets more tokens than with the
  base tokenizer, and byte-level decoding stays lossless.
* **SentencePiece BPE** (``ModelProto`` via ``sentencepiece_model_pb2``): V′'s
  normal pieces missing from the base are appended with scores strictly below
  every base score (float32-distinct, e.g. below Mistral's −1e9 whitespace
  pieces), so every base merge takes precedence.  A piece is appended only if it
  is one character or splits into two pieces of the merged vocabulary.
  ``tokenizer.model`` plus an equivalent ``tokenizer.json`` are written.

``add_special_tokens`` (e.g. ``["<mask>"]``) appends special tokens after the new
tokens; ``mask_token`` also names it in ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_lang.adaptation.tokenizer_files import (
    SP_CONTROL,
    SP_NORMAL,
    TokenizerError,
    atomic_output_dir,
    load_sp_proto,
    sentencepiece_to_tokenizers,
    write_hf_files,
)
from megatron_lang.platform.logging import get_logger

logger = get_logger(__name__)


@dataclass
class ExtensionReport:
    """What :func:`extend_tokenizer` did (also ``extension_report.json``)."""

    kind: str
    base: str
    new: str
    base_size: int
    new_tokenizer_size: int
    candidates: int
    """tokens of V′ not in V (before ``max_new_tokens``)"""
    added: int
    """tokens appended (intermediate pieces included)"""
    intermediate_added: int = 0
    skipped_unreachable: int = 0
    merges_added: int = 0
    merges_skipped: int = 0
    special_added: list[str] = field(default_factory=list)
    final_size: int = 0
    first_new_id: int = 0


def _resolve(path: str | Path, what: str) -> tuple[str, Path]:
    """``("hf", tokenizer.json)`` or ``("sentencepiece", .model)`` for a folder or file."""
    p = Path(path)
    if p.is_dir():
        if (p / "tokenizer.model").is_file():
            return "sentencepiece", p / "tokenizer.model"
        if (p / "tokenizer.json").is_file():
            return "hf", p / "tokenizer.json"
        raise TokenizerError(f"{p}: {what} folder has no tokenizer.json or tokenizer.model")
    if not p.is_file():
        raise TokenizerError(f"{p}: {what} tokenizer does not exist")
    with open(p, "rb") as f:
        if f.read(1) == b"{":
            return "hf", p
    load_sp_proto(p)  # raises with the file name when it is not SentencePiece
    return "sentencepiece", p


def _merge_pair(m) -> tuple[str, str]:
    if isinstance(m, str):
        a, b = m.split(" ", 1)
        return a, b
    return m[0], m[1]


def _check_bpe(data: dict, path: Path) -> None:
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"{path}: not a BPE tokenizer.json (model type {model.get('type')})")
    text = json.dumps([data.get("pre_tokenizer"), data.get("decoder")])
    if '"ByteLevel"' not in text:
        raise TokenizerError(f"{path}: not a byte-level BPE (no ByteLevel pre-tokenizer/decoder)")


def _extend_bpe(base_json: Path, new_json: Path, max_new: int | None, report: ExtensionReport):
    from tokenizers import pre_tokenizers

    base = json.loads(base_json.read_text(encoding="utf-8"))
    new = json.loads(new_json.read_text(encoding="utf-8"))
    _check_bpe(base, base_json)
    _check_bpe(new, new_json)
    vocab: dict[str, int] = base["model"]["vocab"]
    added_contents = {t["content"]: t["id"] for t in base.get("added_tokens", [])}
    all_ids = list(vocab.values()) + list(added_contents.values())
    next_id = max(all_ids) + 1
    report.base_size = next_id
    report.first_new_id = next_id
    known = set(vocab) | set(added_contents)
    new_vocab: dict[str, int] = new["model"]["vocab"]
    new_special = {t["content"] for t in new.get("added_tokens", [])}
    report.new_tokenizer_size = max(new_vocab.values()) + 1
    new_merges = [_merge_pair(m) for m in new["model"]["merges"]]
    producer: dict[str, tuple[str, str]] = {}
    for a, b in new_merges:
        producer.setdefault(a + b, (a, b))
    single = set(pre_tokenizers.ByteLevel.alphabet())
    order = sorted((i, t) for t, i in new_vocab.items() if t not in known and t not in new_special)
    report.candidates = len(order)

    def closure(tok: str, need: list[str], seen: set[str]) -> bool:
        """Missing pieces to add before ``tok`` (in order); False when unreachable."""
        if tok in vocab or tok in seen:
            return True
        if tok not in single:
            parts = producer.get(tok)
            if parts is None or not all(closure(p, need, seen) for p in parts):
                return False
        seen.add(tok)
        need.append(tok)
        return True

    added = 0
    for _, tok in order:
        need: list[str] = []
        if not closure(tok, need, set()):
            report.skipped_unreachable += 1
            continue
        if max_new is not None and added + len(need) > max_new:
            break
        for piece in need:
            vocab[piece] = next_id
            next_id += 1
        report.intermediate_added += len(need) - 1
        added += len(need)
    report.added = added
    merges = base["model"]["merges"]
    as_strings = bool(merges) and isinstance(merges[0], str)
    have = {_merge_pair(m) for m in merges}
    for a, b in new_merges:
        if (a, b) in have:
            continue
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(f"{a} {b}" if as_strings else [a, b])
            have.add((a, b))
            report.merges_added += 1
        else:
            report.merges_skipped += 1
    return base, next_id


def _extend_sp(base_path: Path, new_path: Path, max_new: int | None, report: ExtensionReport):
    import numpy as np

    base = load_sp_proto(base_path)
    new = load_sp_proto(new_path)
    for proto, path in ((base, base_path), (new, new_path)):
        if proto.trainer_spec.model_type != 2:
            raise TokenizerError(f"{path}: only SentencePiece BPE models can be extended")
    known = {p.piece for p in base.pieces}
    report.base_size = report.first_new_id = len(base.pieces)
    report.new_tokenizer_size = len(new.pieces)
    cand = [p.piece for p in new.pieces if p.type == SP_NORMAL and p.piece not in known]
    report.candidates = len(cand)
    score = np.float32(min(p.score for p in base.pieces))
    for piece in cand:
        if max_new is not None and report.added >= max_new:
            break
        splits = (piece[:k] in known and piece[k:] in known for k in range(1, len(piece)))
        if len(piece) > 1 and not any(splits):
            report.skipped_unreachable += 1
            continue
        step = max(np.float32(1.0), np.spacing(np.abs(score)) * 2)
        score = np.float32(score - step)
        item = base.pieces.add()
        item.piece, item.score, item.type = piece, float(score), SP_NORMAL
        known.add(piece)
        report.added += 1
    return base, len(base.pieces)


def extend_tokenizer(
    base: str | Path,
    new: str | Path,
    output_dir: str | Path,
    max_new_tokens: int | None = None,
    add_special_tokens: list[str] | None = None,
    mask_token: str | None = None,
    overwrite: bool = False,
) -> ExtensionReport:
    """Merge the target-language tokenizer ``new`` into ``base`` and write the result.

    Args:
        base: the base tokenizer: HF folder / ``tokenizer.json`` (byte-level BPE) or a
            SentencePiece BPE ``.model`` (or a folder with ``tokenizer.model``).
        new: the target-language tokenizer of the same kind (e.g. from
            :func:`megatron_lang.adaptation.tokenizer_train.train_tokenizer`).
        output_dir: folder to write: ``tokenizer.json``, ``tokenizer_config.json``,
            ``extension_report.json`` (SentencePiece: also ``tokenizer.model``); the
            base folder's other files (chat template …) are copied.
        max_new_tokens: add at most this many tokens (the first in ``new``'s order).
        add_special_tokens: special tokens appended after the new tokens (skipped
            when the base has them).
        mask_token: a mask token: appended like ``add_special_tokens`` and set as
            ``mask_token`` in ``tokenizer_config.json``.
        overwrite: replace an existing output folder.

    Returns:
        The :class:`ExtensionReport` (base size, new tokens added, final size …).

    Raises:
        TokenizerError: missing files, unsupported or mismatched kinds, bad options.
    """
    from tokenizers import AddedToken, Tokenizer

    if max_new_tokens is not None and max_new_tokens < 0:
        raise TokenizerError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    kind, base_file = _resolve(base, "base")
    new_kind, new_file = _resolve(new, "new")
    if kind != new_kind:
        raise TokenizerError(
            f"cannot extend a {kind} tokenizer ({base_file}) with a {new_kind} one ({new_file})"
        )
    report = ExtensionReport(kind, str(base_file), str(new_file), 0, 0, 0, 0)
    specials = list(
        dict.fromkeys([*(add_special_tokens or []), *([mask_token] if mask_token else [])])
    )
    with atomic_output_dir(output_dir, overwrite) as tmp:
        base_dir = base_file.parent if Path(base).is_dir() else None
        if base_dir is not None:
            for f in sorted(base_dir.iterdir()):
                if f.is_file() and f.name not in (
                    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"
                ):  # fmt: skip
                    shutil.copy2(f, tmp / f.name)
        if kind == "hf":
            data, _ = _extend_bpe(base_file, new_file, max_new_tokens, report)
            tok = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
        else:
            proto, _ = _extend_sp(base_file, new_file, max_new_tokens, report)
            have = {p.piece for p in proto.pieces}
            for s in specials:
                if s not in have:
                    item = proto.pieces.add()
                    item.piece, item.score, item.type = s, 0.0, SP_CONTROL
            proto.trainer_spec.vocab_size = len(proto.pieces)
            (tmp / "tokenizer.model").write_bytes(proto.SerializeToString())
            tok = sentencepiece_to_tokenizers(proto)
        vocab = tok.get_vocab(with_added_tokens=True)
        todo = [s for s in specials if s not in vocab]
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in todo])
        report.special_added = [s for s in specials if s not in _base_tokens(base_file, kind)]
        report.final_size = tok.get_vocab_size(with_added_tokens=True)
        config = _base_config(base_dir, kind, base_file)
        if mask_token:
            config["mask_token"] = mask_token
        cls = config.pop("tokenizer_class", "PreTrainedTokenizerFast")
        if kind == "sentencepiece":
            cls = "PreTrainedTokenizerFast"
        named = {k: config.pop(k) for k in list(config) if k.endswith("_token")}
        write_hf_files(tmp, tok, named, tokenizer_class=cls, extra=config)
        (tmp / "extension_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    logger.info(
        "extended %s: base %d + %d new = %d tokens",
        base_file, report.base_size, report.added, report.final_size,
    )  # fmt: skip
    return report


def _base_tokens(path: Path, kind: str) -> set[str]:
    if kind == "sentencepiece":
        return {p.piece for p in load_sp_proto(path).pieces}
    from tokenizers import Tokenizer

    return set(Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True))


def _base_config(base_dir: Path | None, kind: str, base_file: Path) -> dict:
    """The base's ``tokenizer_config.json`` fields to keep (special tokens, class …)."""
    config: dict = {}
    if base_dir is not None and (base_dir / "tokenizer_config.json").is_file():
        raw = json.loads((base_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        drop = {"added_tokens_decoder", "is_local", "local_files_only", "name_or_path", "backend"}
        config = {k: v for k, v in raw.items() if k not in drop}
    if kind == "sentencepiece" and not any(k.endswith("_token") for k in config):
        proto = load_sp_proto(base_file)
        spec = proto.trainer_spec
        for name, idx in (("unk_token", spec.unk_id), ("bos_token", spec.bos_id), ("eos_token", spec.eos_id), ("pad_token", spec.pad_id)):  # fmt: skip
            if 0 <= idx < len(proto.pieces):
                config[name] = proto.pieces[idx].piece
        config.setdefault("add_bos_token", False)
    for k, v in list(config.items()):
        if k.endswith("_token") and isinstance(v, dict):  # AddedToken serialisations
            config[k] = v.get("content")
    return config
