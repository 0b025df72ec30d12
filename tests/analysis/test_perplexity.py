"""Perplexity evaluation: exact NLL, windows, HF = Megatron, per-word figures, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megatron_lang.analysis.perplexity import (
    EvaluationError,
    count_words,
    documents_from_indexed,
    documents_from_texts,
    evaluate_models,
    evaluate_texts,
    open_model,
    plan_windows,
    read_texts,
    score_documents,
)
from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, build_html_corpus, iter_html_documents
from tests.conversion._tiny import make_hf_model

pytestmark = pytest.mark.unit

EOT = "<|endoftext|>"


def _gimp_texts(lang: str, docs: int, chars: int, skip: int = 0) -> list[str]:
    pages = itertools.islice(iter_html_documents(GIMP_HELP_ROOT / lang, lang), skip, skip + docs)
    return [p["text"][:chars] for p in pages]


def _train_tokenizer(out_dir: Path, vocab_size: int, texts: list[str]) -> Path:
    """A byte-level BPE tokenizer (EOS ``<|endoftext|>``, no BOS) saved as an HF tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny random HF Llama (vocab 1000) with a 1000-token BPE; a 300-token BPE; its conversion."""
    from megatron_lang.conversion import hf_to_megatron

    root = tmp_path_factory.mktemp("ppl-tiny")
    corpus = _gimp_texts("en", 40, 3000) + _gimp_texts("da", 40, 3000)
    hf = root / "hf"
    make_hf_model("llama2", hf)
    _train_tokenizer(hf, 1000, corpus)
    small = _train_tokenizer(root / "tok300", 300, corpus)
    ckpt = root / "megatron"
    hf_to_megatron(hf, ckpt, vocab_divisor=128)
    return {"root": root, "hf": hf, "tok300": small, "megatron": ckpt}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Four real English snippets of different lengths (plus an empty document)."""
    return [t[:n] for t, n in zip(_gimp_texts("en", 4, 2000, skip=50), (300, 700, 120, 1000))] + [
        ""
    ]


def test_plan_windows_scores_every_target_exactly_once_with_enough_context():
    for n, length, stride in itertools.product(
        (1, 2, 7, 16, 17, 50), (1, 4, 16), (None, 1, 3, 4, 16)
    ):
        if stride is not None and stride > length:
            with pytest.raises(EvaluationError, match="stride"):
                plan_windows(n, length, stride)
            continue
        t = length if stride is None else stride
        scored = []
        for w in plan_windows(n, length, stride):
            assert 1 <= w.end - w.start <= length
            assert w.start < w.first <= w.end <= n
            for p in range(w.first, w.end + 1):
                assert p - w.start >= min(p, length - t + 1)  # context tokens before target p
            scored.extend(range(w.first, w.end + 1))
        assert scored == list(range(1, n + 1)), (n, length, stride)
    assert plan_windows(0, 4) == []
    with pytest.raises(EvaluationError, match="seq_length"):
        plan_windows(5, 0)


def test_loss_equals_cross_entropy_over_the_model_logits(tiny, texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = evaluate_texts(tiny["hf"], texts, seq_length=512, batch_size=2)

    tok = AutoTokenizer.from_pretrained(tiny["hf"])
    model = AutoModelForCausalLM.from_pretrained(tiny["hf"], dtype=torch.float32).eval()
    eot = tok.convert_tokens_to_ids(EOT)  # no BOS: the EOS token is the prefix
    nll, tokens = 0.0, 0
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        if not ids:
            continue
        stream = torch.tensor([[eot, *ids]])
        with torch.no_grad():
            logits = model(stream).logits[0].float()
        nll += F.cross_entropy(logits[:-1], stream[0, 1:], reduction="sum").item()
        tokens += len(ids)
    assert result.tokens == tokens
    assert result.documents == len(texts)
    assert result.nll_sum == pytest.approx(nll, rel=1e-5)
    assert result.loss_per_token == pytest.approx(nll / tokens, rel=1e-5)
    assert result.words == sum(len(t.split()) for t in texts)
    assert result.bytes == sum(len(t.encode()) for t in texts)
    assert result.bits_per_word == pytest.approx(nll / math.log(2) / result.words, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / result.bytes, rel=1e-5)


@pytest.mark.parametrize("stride", [None, 3, 8, 1])
def test_windows_score_each_token_once_with_its_window_context(tiny, texts, stride):
    """Each target's NLL equals the model's prediction from exactly its window's context."""
    from transformers import AutoModelForCausalLM

    length = 8
    with open_model(tiny["hf"]) as m:
        docs = documents_from_texts(m.tokenizer, [texts[2], texts[0][:150]])
        result = score_documents(m, docs, seq_length=length, stride=stride, batch_size=3)
        full = score_documents(m, docs, seq_length=4096)
        eot = m.tokenizer.convert_tokens_to_ids(EOT)
    model = AutoModelForCausalLM.from_pretrained(tiny["hf"], dtype=torch.float32).eval()
    t = length if stride is None else stride
    expected = 0.0
    for doc in docs:
        stream = [eot, *doc.ids]
        for p in range(1, len(stream)):
            start = 0 if p <= length else t * math.ceil((p - length) / t)
            with torch.no_grad():
                logits = model(torch.tensor([stream[start:p]])).logits[0, -1].float()
            expected += F.cross_entropy(logits, torch.tensor(stream[p])).item()
    assert result.tokens == sum(len(d.ids) for d in docs) > 3 * length
    assert result.nll_sum == pytest.approx(expected, rel=1e-5)
    assert full.tokens == result.tokens
    assert full.nll_sum != pytest.approx(result.nll_sum, rel=1e-6)  # context length matters


def test_hf_and_megatron_conversion_give_the_same_loss(tiny, texts, tmp_path):
    hf = evaluate_texts(tiny["hf"], texts, seq_length=64, batch_size=4)
    meg = evaluate_texts(tiny["megatron"], texts, seq_length=64, batch_size=4)
    assert meg.tokens == hf.tokens and meg.words == hf.words
    assert abs(meg.loss_per_token - hf.loss_per_token) < 1e-4

    run = tmp_path / "run"  # a trainer run folder: latest -> iter_N with train_state.json
    shutil.copytree(tiny["megatron"], run / "iter_0000003")
    (run / "iter_0000003" / "train_state.json").write_text("{}")
    (run / "latest").write_text("iter_0000003\n")
    report = evaluate_models({"run": run}, {"en": _write_jsonl(tmp_path / "en.jsonl", texts)}, 64)
    assert report.rows[0].model_path.endswith("iter_0000003")
    assert report.rows[0].model_kind == "megatron"
    assert report.get("run", "en").nll_sum == pytest.approx(meg.nll_sum, rel=1e-6)


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts if t))
    return path


def _preprocess(jsonl: Path, tokenizer: Path, prefix: Path) -> Path:
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig(
        [str(jsonl)], str(prefix), str(tokenizer), append_eod=True, progress=False
    )
    preprocess(cfg)
    return Path(cfg.dataset_prefix("text"))


def test_indexed_dataset_gives_the_same_figures_as_its_text(tiny, texts, tmp_path):
    jsonl = _write_jsonl(tmp_path / "en.jsonl", texts)
    good = _preprocess(jsonl, tiny["hf"], tmp_path / "en")
    report = evaluate_models({"tiny": tiny["hf"]}, {"text": jsonl, "bin": good}, seq_length=64)
    a, b = report.get("tiny", "text"), report.get("tiny", "bin")
    assert (b.tokens, b.words, b.bytes, b.documents) == (a.tokens, a.words, a.bytes, a.documents)
    assert b.nll_sum == pytest.approx(a.nll_sum, rel=1e-6)

    other = _preprocess(jsonl, tiny["tok300"], tmp_path / "en300")  # ids < 1000, wrong tokenizer
    with pytest.raises(EvaluationError, match="en300_text_document.*another tokenizer"):
        evaluate_models({"tiny": tiny["hf"]}, {"bin": other}, seq_length=64)


def test_word_counts_do_not_depend_on_the_tokenizer(tiny, texts):
    """More tokens per word changes per-token figures; words, bytes and the definitions do not."""
    own = evaluate_texts(tiny["hf"], texts, seq_length=64)
    fine = evaluate_texts(tiny["hf"], texts, seq_length=64, tokenizer=tiny["tok300"])
    assert fine.tokens > 1.3 * own.tokens
    assert (fine.words, fine.bytes, fine.characters) == (own.words, own.bytes, own.characters)
    assert own.words == sum(count_words(t) for t in texts)
    assert fine.loss_per_token != pytest.approx(own.loss_per_token, rel=1e-3)
    for r in (own, fine):
        assert r.bits_per_word == pytest.approx(r.nll_sum / math.log(2) / r.words, rel=1e-12)
        assert r.loss_per_word == pytest.approx(r.loss_per_token * r.tokens_per_word, rel=1e-12)


@pytest.fixture(scope="module")
def smollm2(smollm2_fp32_dir):  # noqa: F811
    with open_model(smollm2_fp32_dir, name="smollm2") as m:
        yield m


def _shared_words(text: str, other: str) -> float:
    words, vocab = text.split(), set(other.split())
    return sum(w in vocab for w in words) / max(len(words), 1)


@pytest.mark.slow
def test_smollm2_danish_costs_more_bits_per_word_than_english(smollm2, tmp_path):
    corpus = tmp_path / "gimp.jsonl"
    build_html_corpus(corpus, ["da", "en"])  # ~3 s: the whole manual in both languages
    pages: dict[str, dict[str, str]] = {"da": {}, "en": {}}
    for line in corpus.read_text().splitlines():
        r = json.loads(line)
        pages[r["lang"]][r["source"].split("/", 1)[1]] = r["text"][:1000]
    # the same manual pages in both languages, where the Danish page is really translated:
    # fewer than half of its words also occur on the English page (about 1 page in 10;
    # most Danish pages of the manual are largely untranslated English)
    both = [p for p in sorted(pages["da"]) if p in pages["en"]]
    translated = [p for p in both if _shared_words(pages["da"][p], pages["en"][p]) < 0.5][:8]
    assert len(translated) == 8
    by_lang = {lang: [pages[lang][p] for p in translated] for lang in ("da", "en")}
    results = {
        lang: evaluate_texts(smollm2, texts, seq_length=512, batch_size=4)
        for lang, texts in by_lang.items()
    }
    da, en = results["da"], results["en"]
    for lang, r in results.items():
        print(
            f"SmolLM2-135M {lang}: {r.documents} docs {r.tokens} tokens {r.words} words, "
            f"{r.loss_per_token:.4f} nats/token, ppl/token {r.perplexity:.2f}, "
            f"{r.bits_per_word:.3f} bits/word, {r.bits_per_byte:.4f} bits/byte"
        )
    assert da.tokens_per_word > 1.3 * en.tokens_per_word  # an English-centric tokenizer
    assert da.bits_per_word > 1.5 * en.bits_per_word
    assert 0.5 < en.bits_per_byte < 3.0  # a trained model, far from the 8 bits of uniform bytes


def test_smollm2_non_canonical_tokenization_same_words_more_bits(smollm2, tmp_path):
    """Re-tokenising the same text character by character: ~3x the tokens, same words and bytes.

    The per-word figure measures how probable the model finds the text along that
    token path; the tokenization the model was trained on should be the far more
    probable path, so bits per word must rise (a real property of the model).
    """
    from megatron_lang.data.indexed import IndexedDatasetWriter

    tok = smollm2.tokenizer
    texts = _gimp_texts("da", 3, 300, skip=20)
    split = [[i for c in t for i in tok.encode(c, add_special_tokens=False)] for t in texts]
    prefix = tmp_path / "da_chars"
    with IndexedDatasetWriter(prefix, np.int32) as w:
        flat = np.concatenate([np.asarray(s) for s in split])
        w.add_documents(flat, np.array([len(s) for s in split]), np.ones(len(split), np.int64))
    with pytest.raises(EvaluationError, match="da_chars"):
        documents_from_indexed(tok, prefix, smollm2.vocab_size)
    jsonl = _write_jsonl(tmp_path / "da.jsonl", texts)
    report = _score_all(smollm2, {"canonical": jsonl, "chars": prefix})
    can, chars = report["canonical"], report["chars"]
    for name, r in report.items():
        print(
            f"SmolLM2-135M {name}: {r.tokens} tokens {r.words} words {r.bits_per_word:.3f} bits/word"
        )
    assert chars.tokens > 2 * can.tokens
    assert (
        (chars.words, chars.bytes)
        == (can.words, can.bytes)
        == (
            sum(count_words(t) for t in texts),
            sum(len(t.encode()) for t in texts),
        )
    )
    assert chars.bits_per_word > can.bits_per_word + 1.0


def _score_all(model, data: dict[str, Path]) -> dict:
    """Score a loaded model on texts and an indexed set (non-canonical ids allowed)."""
    out = {}
    for name, path in data.items():
        if path.suffix == ".jsonl":
            docs = documents_from_texts(model.tokenizer, read_texts(path))
        else:
            docs = documents_from_indexed(
                model.tokenizer, path, model.vocab_size, allow_noncanonical=True
            )
        out[name] = score_documents(model, docs, seq_length=512, batch_size=4)
    return out


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_the_table_and_writes_json(tiny, texts, tmp_path, capsys):
    from tools.analysis.evaluate import main

    en = _write_jsonl(tmp_path / "en.jsonl", texts[:2])
    da = tmp_path / "da.txt"
    da.write_text(_gimp_texts("da", 1, 400)[0])
    out = tmp_path / "reports" / "ppl.json"
    argv = ["--models", f"hf={tiny['hf']}", f"meg={tiny['megatron']}", "--data", f"en={en}"]
    argv += [f"da={da}", "--seq-length", "32", "--stride", "16", "--output", str(out)]
    assert main(argv + ["--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "bits/word" in printed and "meg" in printed and " da " in printed
    report = json.loads(out.read_text())
    assert report["format"] == "megatron_lang.perplexity/1"
    assert report["settings"]["seq_length"] == 32 and report["settings"]["stride"] == 16
    rows = {(r["model"], r["language"]): r for r in report["results"]}
    assert set(rows) == {("hf", "en"), ("hf", "da"), ("meg", "en"), ("meg", "da")}
    direct = evaluate_texts(tiny["hf"], texts[:2], seq_length=32, stride=16)
    assert rows["hf", "en"]["nll_sum"] == pytest.approx(direct.nll_sum, rel=1e-9)
    assert rows["hf", "en"]["words"] == direct.words
    assert rows["hf", "en"]["bits_per_word"] == pytest.approx(direct.bits_per_word, rel=1e-9)
    assert abs(rows["meg", "da"]["loss_per_token"] - rows["hf", "da"]["loss_per_token"]) < 1e-4
    assert rows["hf", "da"]["prefix_token"] == EOT and rows["meg", "en"]["model_kind"] == "megatron"
    assert [p.name for p in out.parent.iterdir()] == ["ppl.json"]  # no temporary left


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_data", "missing.jsonl"),
        ("empty_data", "empty.jsonl has no documents"),
        ("unknown_model", "not_a_model is not an HF model directory"),
        ("missing_model", "nowhere does not exist"),
        ("bad_stride", "stride must be in 1 .. seq_length=8"),
    ],
)
def test_cli_bad_input_names_it_and_writes_nothing(tiny, tmp_path, capsys, case, message):
    from tools.analysis.evaluate import main

    good = _write_jsonl(tmp_path / "ok.jsonl", ["Hello world, this is text."])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "not_a_model").mkdir()
    model, data, extra = str(tiny["hf"]), str(good), []
    if case == "missing_data":
        data = str(tmp_path / "missing.jsonl")
    elif case == "empty_data":
        data = str(tmp_path / "empty.jsonl")
    elif case == "unknown_model":
        model = str(tmp_path / "not_a_model")
    elif case == "missing_model":
        model = str(tmp_path / "nowhere")
    else:
        extra = ["--seq-length", "8", "--stride", "9"]
    out = tmp_path / "out" / "ppl.json"
    argv = ["--models", model, "--data", f"en={data}", "--output", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not out.parent.exists()


def test_a_tokenizer_beyond_the_model_vocabulary_is_rejected(tiny, texts, smollm2_tokenizer_dir):
    with pytest.raises(EvaluationError, match="outside the model's vocabulary \\(1000\\)"):
        evaluate_texts(tiny["hf"], texts, seq_length=64, tokenizer=smollm2_tokenizer_dir)
