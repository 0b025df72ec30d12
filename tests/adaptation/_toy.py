"""Toy tokenizers and corpora for the embedding-init and checkpoint-remap tests (built in-test)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from megatron_lang.conversion.vocab import NewTokenContext, VocabRemap


def fast(tokenizer_object):
    """Wrap a ``tokenizers.Tokenizer`` as an HF fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object)


def plain_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A BPE with an explicit vocabulary, no byte-level or SentencePiece markers."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return fast(tok)


def byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A byte-level BPE (GPT-2 style ``Ġ`` markers) with an explicit vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return fast(tok)


def unigram(pieces: list[tuple[str, float]], legacy: bool = False):
    """A SentencePiece-style Unigram with ``▁`` markers (Metaspace, or the legacy normalizer)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
    if legacy:  # Llama-2 style conversion: prefix and space markers in the normalizer
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return fast(tok)


def word_level(words: list[str]):
    """Whitespace-split word vocabulary with ``[UNK]`` at id 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return fast(tok)


def context(old_tok, new_tok, old_VH: torch.Tensor, name: str = "model.embed_tokens.weight"):
    """The VocabRemap and NewTokenContext that conversion would build for ``old_VH``."""
    remap = VocabRemap(old_tok, new_tok, "mean")
    ctx = NewTokenContext(old_VH, name, remap.new_tokens, remap.new_ids, old_tok, new_tok)
    return remap, ctx


DANISH_WORDS = ["hus", "huset", "byen", "stor", "lille", "hyggeligt", "smørrebrød", "københavn",
                "og", "er", "det", "en", "et", "på", "i", "med", "bord", "øl", "æble"]  # fmt: skip


def danish_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` generated lines of Danish-looking words (no real text)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(DANISH_WORDS) for _ in range(rng.randint(5, 12))) for _ in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    """Write ``{"text": ...}`` lines."""
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return path
