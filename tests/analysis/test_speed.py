"""Generation speed per word: counts, tokens/word = fertility, ratios, exactly N new tokens, CLI."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from megatron_lang.adaptation.fertility import measure_fertility
from megatron_lang.analysis.eval_data import count_words
from megatron_lang.analysis.generate import greedy_continuations
from megatron_lang.analysis.speed import (
    NORMISTRAL_REFERENCE,
    SpeedError,
    flops_per_token,
    measure_model,
    measure_speed,
    select_texts,
)

pytestmark = pytest.mark.unit

EOT = "<|endoftext|>"
SETTINGS = dict(
    new_tokens=8, chunk_tokens=64, prompts=2, prompt_words=6, max_words=400, repeats=2, threads=1
)


def _tiny(out: Path, tokenizer, tie: bool = True, zero_norm: bool = False) -> Path:
    """A random 2-layer Llama sized to ``tokenizer``, saved with it to ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    if zero_norm:  # every logit 0: greedy picks id 0, which is EOS of the BPE tokenizer
        with torch.no_grad():
            model.model.norm.weight.zero_()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def danish(gimp_texts, tmp_path_factory) -> tuple[list[str], Path]:
    """The Danish GIMP pages (the first 25 of the fixture) and a JSONL of those used."""
    texts = select_texts(gimp_texts[:25], SETTINGS["max_words"])
    path = tmp_path_factory.mktemp("speed") / "da.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return texts, path


@pytest.fixture(scope="module")
def models(tmp_path_factory, smollm2_tokenizer_dir, bpe_tokenizer) -> dict[str, Path]:
    """Tiny Llamas: SmolLM2's tokenizer (49,152) and a 1,500-token BPE (EOS id 0)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("speed_models")
    bpe = PreTrainedTokenizerFast(tokenizer_file=str(bpe_tokenizer), eos_token=EOT)
    assert bpe.eos_token_id == 0
    return {
        "smollm2": _tiny(root / "smollm2", AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)),
        "bpe": _tiny(root / "bpe", bpe, tie=False),
        "eos": _tiny(root / "eos", bpe, zero_norm=True),
    }


@pytest.fixture(scope="module")
def report(models, danish):
    texts, _ = danish
    return measure_speed(
        [("before", models["smollm2"]), ("after", models["bpe"])], texts, **SETTINGS
    )


def test_words_are_count_words_of_the_decoded_greedy_text(report, models, danish):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts, _ = danish
    prompts = report.settings["prompts"]
    assert len(prompts) == SETTINGS["prompts"]
    assert all(len(p.split()) == SETTINGS["prompt_words"] for p in prompts)
    for m, key in zip(report.models, ("smollm2", "bpe")):
        tok = AutoTokenizer.from_pretrained(models[key])
        model = AutoModelForCausalLM.from_pretrained(models[key], dtype=torch.float32).eval()
        decoded = []
        for p in prompts:
            ids = tok(p, return_tensors="pt").input_ids
            g = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8)
            decoded.append(tok.decode(g[0, ids.shape[1] :], skip_special_tokens=True))
        assert m.continuations == decoded
        assert m.generation_words == sum(count_words(c) for c in decoded)
        assert m.generation_words_per_s == pytest.approx(m.generation_words / m.generation_seconds)
        assert m.words == sum(count_words(t) for t in texts)
        assert m.prompt_words_per_s == pytest.approx(m.words / m.prompt_seconds)
        assert m.prompt_words_per_s == pytest.approx(m.prompt_tokens_per_s / m.tokens_per_word)
        assert m.prompt_chunks == math.ceil(m.tokens / SETTINGS["chunk_tokens"])
        assert m.prompt_seconds == statistics.median(m.prompt_seconds_runs)
        assert len(m.generation_seconds_runs) == SETTINGS["repeats"]


def test_tokens_per_word_is_the_fertility_tools(report, models, danish):
    _, path = danish
    fert = measure_fertility(
        [f"da={path}"],
        [f"before={models['smollm2']}", f"after={models['bpe']}"],
        progress=False,
    )
    for m in report.models:
        row = fert.get("da", m.label)
        assert m.tokens == row.tokens and m.words == row.words_whitespace
        assert m.tokens_per_word == pytest.approx(row.fertility_whitespace, rel=1e-12)
    # the two tokenizers really differ on Danish
    assert report.models[1].tokens_per_word > 1.2 * report.models[0].tokens_per_word


def test_ratios_are_the_quotients(report):
    before, after = report.models
    (r,) = report.ratios
    assert (r.baseline, r.model) == ("before", "after")
    assert r.predicted_from_fertility == pytest.approx(
        before.tokens_per_word / after.tokens_per_word, rel=1e-12
    )
    assert r.flops_ratio == pytest.approx(before.flops_per_token / after.flops_per_token)
    assert r.predicted_with_flops == pytest.approx(r.predicted_from_fertility * r.flops_ratio)
    assert r.prompt_words_per_s == pytest.approx(
        after.prompt_words_per_s / before.prompt_words_per_s
    )
    assert r.generation_words_per_s == pytest.approx(
        after.generation_words_per_s / before.generation_words_per_s
    )
    assert r.generation_words_per_s_carried == pytest.approx(
        r.generation_tokens_per_s * r.predicted_from_fertility
    )


def test_flops_per_token_from_the_config(report):
    before, after = report.models
    # tied: the LM head is the embedding, 2·params per token
    assert before.tied_embeddings and not after.tied_embeddings
    assert before.flops_per_token == 2 * before.parameters
    assert before.lm_head_flops_per_token == 2 * 32 * 49152
    # untied: the input embedding is a lookup, the head a matmul
    assert after.flops_per_token == 2 * (after.parameters - 32 * after.vocab_size)
    assert after.lm_head_flop_fraction == pytest.approx(2 * 32 * 1500 / after.flops_per_token)
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(after.model_dir)
    assert flops_per_token(m)[0] == after.flops_per_token


def test_generation_makes_exactly_n_tokens_even_when_eos_wins(models, danish):
    texts, _ = danish
    prompt = " ".join(texts[0].split()[:6])
    # without suppression this model stops at once: greedy picks EOS (id 0)
    (c,) = greedy_continuations(models["eos"], [prompt], max_new_tokens=8)
    assert c.new_tokens == 1
    m = measure_model("eos", models["eos"], texts[:2], [prompt], new_tokens=8, repeats=1)
    assert m.generation_tokens == 8 and m.generation_new_tokens == 8
    assert m.generation_tokens_per_s == pytest.approx(8 / m.generation_seconds)


def test_cli_prints_the_table_and_writes_json(models, danish, tmp_path, capsys):
    from tools.analysis.speed import main

    _, path = danish
    out = tmp_path / "r" / "speed.json"
    rc = main(["--models", f"before={models['smollm2']}", f"after={models['bpe']}",
               "--text", str(path), "--new-tokens", "4", "--prompt-tokens", "128",
               "--prompts", "2", "--prompt-words", "5", "--max-words", "200",
               "--repeats", "1", "--warmup", "1", "--threads", "1", "--device", "cpu",
               "--dtype", "float32", "--output", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| before |" in printed and "| after |" in printed
    assert "Reference, NorMistral: 1.79 → 1.22" in printed and "×1.47" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"settings", "models", "ratios", "reference"}
    for m in data["models"]:
        for k in ("tokens_per_word", "prompt_tokens_per_s", "prompt_words_per_s",
                  "generation_tokens_per_s", "generation_words_per_s",
                  "generation_words_per_s_carried", "lm_head_flop_fraction", "continuations"):  # fmt: skip
            assert k in m
        assert m["generation_tokens"] == 4 * 2
    (r,) = data["ratios"]
    assert r["predicted_from_fertility"] == pytest.approx(
        data["models"][0]["tokens_per_word"] / data["models"][1]["tokens_per_word"]
    )
    ref = data["reference"]
    assert ref["tokens_per_word_before"] == NORMISTRAL_REFERENCE["tokens_per_word_before"]
    assert ref["words_per_step_ratio"] == pytest.approx(1.79 / 1.22)
    assert data["settings"]["threads"] == 1 and data["settings"]["text"] == str(path)


def test_bad_input_exits_2_and_names_it(models, danish, tmp_path, capsys):
    from tools.analysis.speed import main

    _, path = danish
    rc = main(["--models", f"a={models['bpe']}", f"b={tmp_path}", "--text", str(path)])
    assert rc == 2 and str(tmp_path) in capsys.readouterr().err
    rc = main(["--models", f"a={models['bpe']}", "--text", str(path), "--prompts", "999"])
    assert rc == 2 and "999 prompts" in capsys.readouterr().err
    rc = main(["--models", f"a={models['bpe']}", "--text", str(tmp_path / "none.jsonl")])
    assert rc == 2 and "none.jsonl" in capsys.readouterr().err
    with pytest.raises(SpeedError, match="not unique"):
        measure_speed([("a", models["bpe"]), ("a", models["bpe"])], ["x y"])
