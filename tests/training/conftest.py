"""A small real training corpus built at test time: Danish and Nynorsk GIMP manual pages,
a 512-token byte-level BPE trained on them, Megatron datasets and a blend spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus

DOCS = 60


def _train_tokenizer(texts: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"})
    )


@pytest.fixture(scope="session")
def tiny_blend(tmp_path_factory) -> dict[str, str]:
    """``{"blend": yaml path, "tokenizer": dir}`` for the tiny-llama preset (vocab 512)."""
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    root = tmp_path_factory.mktemp("train-data")
    texts = []
    for lang in ("da", "nn"):
        if not (GIMP_HELP_ROOT / lang).is_dir():
            pytest.fail(f"{GIMP_HELP_ROOT / lang} missing: apt-get install gimp-help-{lang}")
        build_html_corpus(root / f"{lang}.jsonl", [lang], max_docs_per_language=DOCS)
        texts += [json.loads(x)["text"] for x in (root / f"{lang}.jsonl").read_text().splitlines()]
    _train_tokenizer(texts, root / "tokenizer")
    for lang in ("da", "nn"):
        preprocess(
            PreprocessConfig(
                inputs=[str(root / f"{lang}.jsonl")],
                output_prefix=str(root / lang),
                tokenizer=str(root / "tokenizer"),
                append_eod=True,
                backend="hf",
                progress=False,
            )
        )
    blend = root / "blend.yaml"
    blend.write_text(
        f"root: {root}\n"
        'split: "90,10,0"\n'
        "sources:\n"
        "  - {name: da_gimp, path: da_text_document, weight: 0.7, max_epochs: 8, language: da}\n"
        "  - {name: nn_gimp, path: nn_text_document, weight: 0.3, max_epochs: 8, language: nn}\n"
    )
    return {"blend": str(blend), "tokenizer": str(root / "tokenizer")}


@pytest.fixture(scope="session")
def start_checkpoint(tiny_blend, tmp_path_factory) -> str:
    """tiny-llama random weights saved at TP=1 with metadata and tokenizer (a start point)."""
    from tests._distributed import run_distributed
    from tests.training import _jobs

    out = str(tmp_path_factory.mktemp("start") / "ckpt")
    run_distributed(_jobs.make_start_checkpoint, 1, tiny_blend, out)
    return out
