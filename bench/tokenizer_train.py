"""Byte-level BPE training: HF ``tokenizers`` (what train_tokenizer.py uses) vs gigatoken.

    python bench/tokenizer_train.py      # the 685 pages of the Danish GIMP manual, 8k and 16k

For each vocabulary size: the best of ``--repeats`` training times of each trainer, and
whether the two give the same merges in the same order (HF's merges mapped back from the
byte-level alphabet to bytes). HF is set up as in
``megatron_lang.adaptation.tokenizer_train`` (GPT-2 regex, no prefix space, all 256 bytes,
min frequency 2); gigatoken gets the corpus as one buffer, documents joined by newlines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPECIALS = ["<s>", "</s>", "<pad>", "<mask>"]


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: character -> byte."""
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return {chr(c): b for b, c in zip(bs, cs)}


def hf_train(texts: list[str], vocab_size: int) -> list[tuple[bytes, bytes]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    dec = byte_decoder()
    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [(bytes(dec[c] for c in a), bytes(dec[c] for c in b)) for a, b in pairs]


def gigatoken_train(corpus: bytes, vocab_size: int) -> list[tuple[bytes, bytes]]:
    import gigatoken

    _, merges = gigatoken.train_bpe(corpus, vocab_size, SPECIALS)  # prints its progress
    return [(bytes(a), bytes(b)) for a, b in merges]


def timed(repeats: int, fn, *args):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--language", default="da", help="GIMP manual language folder (default da)")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[8000, 16000])
    p.add_argument("--repeats", type=int, default=3, help="timed runs (best is printed)")
    args = p.parse_args(argv)

    from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, iter_html_documents

    texts = [r["text"] for r in iter_html_documents(GIMP_HELP_ROOT / args.language, "x")]
    corpus = "\n".join(texts).encode()
    lines = [f"{len(texts)} pages, {len(corpus) / 1e6:.2f} MB ({GIMP_HELP_ROOT / args.language})"]
    same_everywhere = True
    for vocab in args.vocab_sizes:
        hf_s, hf_merges = timed(args.repeats, hf_train, texts, vocab)
        gt_s, gt_merges = timed(args.repeats, gigatoken_train, corpus, vocab)
        same = hf_merges == gt_merges
        same_everywhere &= same
        lines.append(
            f"vocab {vocab}: {len(hf_merges)} merges; same merges in the same order: {same}; "
            f"HF tokenizers {hf_s:.2f} s, gigatoken {gt_s:.2f} s (best of {args.repeats})"
        )
    print("\n".join(lines))  # after gigatoken's own progress lines
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    raise SystemExit(main())
