"""A small real corpus for the CPU quickstart, tests and benchmarks.

Builds, on the user's machine, Danish and Nynorsk (and optionally English)
documents from the GIMP manual that Debian's ``gimp-help-*`` packages install,
tokenizes them into Megatron datasets and writes a blend spec. Nothing of the
text is shipped with megatron_lang.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus


def train_bpe_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 512) -> Path:
    """A byte-level BPE (HF ``tokenizers``) with ``<|endoftext|>`` as EOD, saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    return out


def build_demo_data(
    out_dir: str | Path,
    languages: tuple[str, ...] = ("da", "nn"),
    docs_per_language: int | None = 60,
    tokenizer: str | Path | None = None,
    vocab_size: int = 512,
    max_epochs: float = 8,
    split: str = "90,10,0",
) -> dict[str, str]:
    """Corpus -> (tokenizer) -> Megatron datasets -> blend spec, under ``out_dir``.

    Args:
        out_dir: where everything is written.
        languages: GIMP manual languages (folders under the help root).
        docs_per_language: pages per language (None: all).
        tokenizer: existing tokenizer to use; None trains a byte-level BPE of
            ``vocab_size`` on the corpus.
        vocab_size: size of the trained tokenizer.
        max_epochs: repetition cap of every source in the blend.
        split: train/valid/test split of every source.

    Returns:
        ``{"blend": path of the blend YAML, "tokenizer": tokenizer path}``.

    Raises:
        FileNotFoundError: the GIMP manual for a language is not installed.
    """
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    texts = []
    for lang in languages:
        if not (GIMP_HELP_ROOT / lang).is_dir():
            raise FileNotFoundError(
                f"{GIMP_HELP_ROOT / lang} is missing: apt-get install gimp-help-{lang}"
            )
        corpus = root / f"{lang}.jsonl"
        build_html_corpus(corpus, [lang], max_docs_per_language=docs_per_language)
        if tokenizer is None:
            texts += [json.loads(x)["text"] for x in corpus.read_text().splitlines()]
    tok = (
        Path(tokenizer) if tokenizer else train_bpe_tokenizer(texts, root / "tokenizer", vocab_size)
    )
    for lang in languages:
        preprocess(
            PreprocessConfig(
                inputs=[str(root / f"{lang}.jsonl")],
                output_prefix=str(root / lang),
                tokenizer=str(tok),
                append_eod=True,
                progress=False,
            )
        )
    weight = 1.0 / len(languages)
    lines = [f"root: {root.resolve()}", f'split: "{split}"', "sources:"]
    for lang in languages:
        lines.append(
            f"  - {{name: {lang}_gimp, path: {lang}_text_document, weight: {weight:.6f}, "
            f"max_epochs: {max_epochs}, language: {lang}}}"
        )
    blend = root / "blend.yaml"
    blend.write_text("\n".join(lines) + "\n")
    return {"blend": str(blend), "tokenizer": str(tok)}
