"""Generation speed per word: prompt processing and greedy generation, before/after a tokenizer change.

A tokenizer that cuts the target language into fewer tokens per word makes every
forward step cover more text. Tokens per second hardly change with the vocabulary
(same model size); words per second do. For each HF model directory and the *same*
texts this measures:

* **tokens per word** of its tokenizer on the texts (tokens without special tokens
  per whitespace word, :func:`megatron_lang.analysis.eval_data.count_words`; the
  ``fertility_whitespace`` of ``tools/preprocess/fertility.py`` on the same documents);
* **prompt processing**: every document tokenised, the ids concatenated and cut into
  chunks of ``chunk_tokens`` (the last one shorter), one forward pass per chunk
  (batch 1, no KV cache); tokens/s and words/s = words of the texts / seconds;
* **greedy generation**: ``prompts`` prompts = the first ``prompt_words`` words of
  documents (the same strings for every model), exactly ``new_tokens`` new tokens each
  (EOS suppressed with ``min_new_tokens``); tokens/s, and words/s two ways: the words
  of the decoded continuations (what this model happened to write) / seconds, and the
  *fertility-carried* tokens/s ÷ tokens per word (what it writes per second on text
  like the held-out text; greedy continuations can loop on a few words);
* the per-token FLOPs ``2·(non-embedding parameters) + 2·hidden·vocab`` (the LM head
  is the second term; for a tied-embedding model this is ``2·parameters``) and the LM
  head's share of it.

Against the first model (the baseline) each other model gets the speed-up predicted
from fertility alone, ``tpw_baseline / tpw_model``, the same with the FLOPs per
token (``× flops_baseline / flops_model``: a larger vocabulary makes each step a
little dearer), and the measured words/s ratios. The predicted figure is what
carries to a GPU: there a step's cost is set by the model size, so words/s scale
with 1 / tokens per word, less the LM head's growth.

Timing: ``warmup`` untimed runs, then ``repeats`` timed runs, median; fixed
``torch.set_num_threads(threads)`` (restored afterwards); fp32 on CPU unless
``dtype`` says otherwise; ``torch.cuda.synchronize`` around timings on a GPU.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_lang.analysis.eval_data import count_words
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

NORMISTRAL_REFERENCE = {
    "model": "NorMistral-11B (new tokenizer) vs Mistral-Nemo tokenizer",
    "language": "Norwegian Bokmål",
    "tokens_per_word_before": 1.79,
    "tokens_per_word_after": 1.22,
    "claim": "more than 30 % faster inference",
}
"""The reference claim: tokens per Bokmål word 1.79 -> 1.22 with the new tokenizer."""


class SpeedError(ValueError):
    """Bad input to a speed measurement (the message names the model, text or value)."""


@dataclass
class ModelSpeed:
    """One model's figures on the texts (JSON ``models`` entries)."""

    label: str
    model_dir: str
    vocab_size: int
    hidden_size: int
    parameters: int
    tied_embeddings: bool
    flops_per_token: int
    """``2·(non-embedding parameters) + 2·hidden·vocab`` (attention over the context not counted)."""
    lm_head_flops_per_token: int
    """``2·hidden·vocab``"""
    lm_head_flop_fraction: float
    documents: int
    words: int
    tokens: int
    tokens_per_word: float
    prompt_chunks: int
    prompt_seconds: float
    """median over the repeats of the time to process all chunks"""
    prompt_tokens_per_s: float
    prompt_words_per_s: float
    generation_prompts: int
    generation_new_tokens: int
    """new tokens per prompt (exactly; EOS suppressed)"""
    generation_tokens: int
    generation_words: int
    """``count_words`` of each decoded continuation, summed"""
    generation_seconds: float
    generation_tokens_per_s: float
    generation_words_per_s: float
    """decoded words / seconds"""
    generation_words_per_s_carried: float
    """generation tokens/s ÷ tokens per word on the texts"""
    prompt_seconds_runs: list[float] = field(default_factory=list)
    generation_seconds_runs: list[float] = field(default_factory=list)
    continuations: list[str] = field(default_factory=list)


@dataclass
class SpeedRatio:
    """A model against the baseline (JSON ``ratios`` entries); > 1: faster per word."""

    baseline: str
    model: str
    predicted_from_fertility: float
    """tokens/word baseline ÷ tokens/word model"""
    flops_ratio: float
    """FLOPs per token baseline ÷ model"""
    predicted_with_flops: float
    """predicted_from_fertility × flops_ratio"""
    prompt_tokens_per_s: float
    prompt_words_per_s: float
    generation_tokens_per_s: float
    generation_words_per_s: float
    generation_words_per_s_carried: float


@dataclass
class SpeedReport:
    """All models, the ratios against the first, the settings and the reference."""

    models: list[ModelSpeed]
    ratios: list[SpeedRatio]
    settings: dict
    reference: dict = field(default_factory=lambda: dict(NORMISTRAL_REFERENCE))

    def to_json(self) -> dict:
        """The JSON document (``docs/evaluation.md`` names the fields)."""
        return {
            "settings": self.settings,
            "models": [asdict(m) for m in self.models],
            "ratios": [asdict(r) for r in self.ratios],
            "reference": {**self.reference, **normistral_ratio()},
        }


def normistral_ratio() -> dict:
    """The reference arithmetic: words per token step after ÷ before, and steps saved."""
    b = NORMISTRAL_REFERENCE["tokens_per_word_before"]
    a = NORMISTRAL_REFERENCE["tokens_per_word_after"]
    return {"words_per_step_ratio": b / a, "fewer_steps_per_word": 1 - a / b}


def flops_per_token(model) -> tuple[int, int, int, bool]:
    """``(flops, lm_head_flops, parameters, tied)`` per token of an HF causal LM.

    ``flops = 2·(parameters − embedding parameters) + 2·hidden·vocab``: every weight
    matrix is one multiply-add per token, the input embedding is a lookup, the LM head
    is ``hidden × vocab`` whether it is tied to the embedding or not.
    """
    params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    vocab, hidden = emb.shape
    non_embedding = params - emb.numel() - (0 if tied or head is None else head.weight.numel())
    lm_head = 2 * hidden * vocab
    return 2 * non_embedding + lm_head, lm_head, params, tied


def select_texts(texts: Sequence[str], max_words: int | None = None) -> list[str]:
    """Non-empty documents in order, whole, until ``max_words`` words are reached."""
    out, words = [], 0
    for t in texts:
        if not t.strip():
            continue
        if max_words is not None and words >= max_words:
            break
        out.append(t)
        words += count_words(t)
    if not out:
        raise SpeedError("no non-empty texts")
    return out


def generation_prompts(texts: Sequence[str], prompts: int, prompt_words: int) -> list[str]:
    """The first ``prompt_words`` words (joined by spaces) of the first ``prompts`` documents
    that have more than ``prompt_words`` words.

    Raises:
        SpeedError: fewer such documents than ``prompts``.
    """
    out = []
    for t in texts:
        w = t.split()
        if len(w) > prompt_words:
            out.append(" ".join(w[:prompt_words]))
            if len(out) == prompts:
                return out
    raise SpeedError(
        f"only {len(out)} documents have more than {prompt_words} words; need {prompts} prompts"
    )


class _Timer:
    def __init__(self, device: str):
        import torch

        self.sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def __enter__(self):
        self.sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.seconds = time.perf_counter() - self.t0


def measure_model(
    label: str,
    model_dir: str | os.PathLike,
    texts: Sequence[str],
    prompts: Sequence[str],
    new_tokens: int = 64,
    chunk_tokens: int = 256,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    dtype=None,
) -> ModelSpeed:
    """Prompt-processing and generation speed of one model on ``texts`` / ``prompts``.

    Raises:
        SpeedError: the model cannot be loaded, or it generated another number of tokens
            than ``new_tokens``.
    """
    import torch
    from transformers import GenerationConfig

    from megatron_lang.analysis.generate import GenerationError, load_hf_model

    try:
        tok, model = load_hf_model(model_dir, device=device, dtype=dtype)
    except GenerationError as e:
        raise SpeedError(str(e)) from e
    flops, head_flops, params, tied = flops_per_token(model)
    enc = tok(list(texts), add_special_tokens=False)["input_ids"]
    ids = [i for doc in enc for i in doc]
    words = sum(count_words(t) for t in texts)
    if not ids or not words:
        raise SpeedError(f"{label}: the texts have no tokens or no words")
    all_ids = torch.tensor(ids, dtype=torch.long, device=device)
    chunks = [all_ids[i : i + chunk_tokens][None] for i in range(0, len(ids), chunk_tokens)]
    timer = _Timer(device)

    def prompt_pass(which) -> float:
        with timer, torch.inference_mode():
            for c in which:
                model(input_ids=c, use_cache=False)
        return timer.seconds

    eos = tok.eos_token_id
    gen_cfg = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
    )
    prompt_ids = [tok(p, return_tensors="pt").input_ids.to(device) for p in prompts]

    def gen_pass(which) -> tuple[float, list[list[int]]]:
        outs = []
        with timer, torch.inference_mode():
            for p in which:
                g = model.generate(p, attention_mask=torch.ones_like(p), generation_config=gen_cfg)
                outs.append(g[0, p.shape[1] :].tolist())
        return timer.seconds, outs

    for _ in range(warmup):
        prompt_pass(chunks[:1])
        gen_pass(prompt_ids[:1])
    prompt_runs = [prompt_pass(chunks) for _ in range(repeats)]
    gen_runs, new = [], None
    for _ in range(repeats):
        s, outs = gen_pass(prompt_ids)
        gen_runs.append(s)
        new = new or outs
    for i, n in enumerate(new):
        if len(n) != new_tokens:
            raise SpeedError(f"{label}: prompt {i} gave {len(n)} new tokens, not {new_tokens}")
    conts = [tok.decode(n, skip_special_tokens=True) for n in new]
    prompt_s = statistics.median(prompt_runs)
    gen_s = statistics.median(gen_runs)
    gen_tokens = new_tokens * len(prompts)
    gen_words = sum(count_words(c) for c in conts)
    tpw = len(ids) / words
    vocab, hidden = model.get_input_embeddings().weight.shape
    log.info("%s: %.3f tokens/word, prompt %.1f s, generation %.1f s", label, tpw, prompt_s, gen_s)
    return ModelSpeed(
        label=label,
        model_dir=str(model_dir),
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        parameters=params,
        tied_embeddings=tied,
        flops_per_token=flops,
        lm_head_flops_per_token=head_flops,
        lm_head_flop_fraction=head_flops / flops,
        documents=len(texts),
        words=words,
        tokens=len(ids),
        tokens_per_word=tpw,
        prompt_chunks=len(chunks),
        prompt_seconds=prompt_s,
        prompt_tokens_per_s=len(ids) / prompt_s,
        prompt_words_per_s=words / prompt_s,
        generation_prompts=len(prompts),
        generation_new_tokens=new_tokens,
        generation_tokens=gen_tokens,
        generation_words=gen_words,
        generation_seconds=gen_s,
        generation_tokens_per_s=gen_tokens / gen_s,
        generation_words_per_s=gen_words / gen_s,
        generation_words_per_s_carried=gen_tokens / gen_s / tpw,
        prompt_seconds_runs=prompt_runs,
        generation_seconds_runs=gen_runs,
        continuations=conts,
    )


def ratio(base: ModelSpeed, m: ModelSpeed) -> SpeedRatio:
    """``m`` against ``base`` (every figure: model ÷ baseline speed, > 1 faster)."""
    pred = base.tokens_per_word / m.tokens_per_word
    fr = base.flops_per_token / m.flops_per_token
    return SpeedRatio(
        baseline=base.label,
        model=m.label,
        predicted_from_fertility=pred,
        flops_ratio=fr,
        predicted_with_flops=pred * fr,
        prompt_tokens_per_s=m.prompt_tokens_per_s / base.prompt_tokens_per_s,
        prompt_words_per_s=m.prompt_words_per_s / base.prompt_words_per_s,
        generation_tokens_per_s=m.generation_tokens_per_s / base.generation_tokens_per_s,
        generation_words_per_s=m.generation_words_per_s / base.generation_words_per_s,
        generation_words_per_s_carried=(
            m.generation_words_per_s_carried / base.generation_words_per_s_carried
        ),
    )


def measure_speed(
    models: Sequence[tuple[str, str | os.PathLike]],
    texts: Sequence[str],
    new_tokens: int = 64,
    chunk_tokens: int = 256,
    prompts: int = 4,
    prompt_words: int = 24,
    max_words: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    dtype=None,
) -> SpeedReport:
    """Measure every ``(label, HF dir)`` on the same texts; ratios against the first.

    Args:
        models: labels and HF model directories; the first is the baseline.
        texts: documents (held-out text of the target language).
        new_tokens: new tokens per generation prompt.
        chunk_tokens: tokens per forward pass of prompt processing.
        prompts: generation prompts (from the first documents long enough).
        prompt_words: words per generation prompt.
        max_words: use whole documents until this many words (None: all).
        repeats: timed runs (median reported).
        warmup: untimed runs first.
        threads: ``torch.set_num_threads`` for the measurement (None: as set).
        device: torch device.
        dtype: torch dtype (default float32).

    Raises:
        SpeedError: no models, labels not unique, bad numbers, too few documents, or a
            model that cannot be loaded.
    """
    import platform

    import torch

    labels = [label for label, _ in models]
    if not models:
        raise SpeedError("need at least one model")
    if len(set(labels)) != len(labels):
        raise SpeedError(f"model labels are not unique: {labels}")
    for name, v in (("new_tokens", new_tokens), ("chunk_tokens", chunk_tokens),
                    ("prompts", prompts), ("prompt_words", prompt_words),
                    ("repeats", repeats)):  # fmt: skip
        if v < 1:
            raise SpeedError(f"{name} must be >= 1 (got {v})")
    for label, path in models:
        if not (Path(path) / "config.json").is_file():
            raise SpeedError(f"model {label}: {path} is not an HF model directory (no config.json)")
    used = select_texts(texts, max_words)
    gen_prompts = generation_prompts(used, prompts, prompt_words)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        results = [
            measure_model(label, path, used, gen_prompts, new_tokens, chunk_tokens, repeats,
                          warmup, device, dtype)
            for label, path in models
        ]  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)
    settings = {
        "device": device,
        "dtype": str(dtype or torch.float32),
        "threads": threads or old_threads,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in load] if load else None,
        "load_average_after": [round(x, 2) for x in os.getloadavg()] if load else None,
        "repeats": repeats,
        "warmup": warmup,
        "chunk_tokens": chunk_tokens,
        "new_tokens": new_tokens,
        "prompts": gen_prompts,
        "prompt_words": prompt_words,
        "max_words": max_words,
        "word_counting": "len(text.split())",
    }
    return SpeedReport(results, [ratio(results[0], m) for m in results[1:]], settings)


def format_markdown(report: SpeedReport) -> str:
    """The Markdown table, the ratio lines against the baseline and the reference line."""
    head = ("model", "vocab", "tokens/word", "LM head FLOPs", "prompt tok/s", "prompt words/s",
            "gen tok/s", "gen words/s (decoded)", "gen words/s (tok/s ÷ tok/word)")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report.models:
        cells = (m.label, f"{m.vocab_size:,}", f"{m.tokens_per_word:.3f}",
                 f"{100 * m.lm_head_flop_fraction:.1f} %", f"{m.prompt_tokens_per_s:.1f}",
                 f"{m.prompt_words_per_s:.1f}", f"{m.generation_tokens_per_s:.2f}",
                 f"{m.generation_words_per_s:.2f}", f"{m.generation_words_per_s_carried:.2f}")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for r in report.ratios:
        lines.append("")
        lines.append(
            f"{r.model} / {r.baseline}: predicted from tokens/word ×{r.predicted_from_fertility:.3f}"
            f" (with the LM head's FLOPs ×{r.predicted_with_flops:.3f}); measured: prompt "
            f"words/s ×{r.prompt_words_per_s:.3f} (tokens/s ×{r.prompt_tokens_per_s:.3f}), "
            f"generation words/s ×{r.generation_words_per_s:.3f} decoded, "
            f"×{r.generation_words_per_s_carried:.3f} carried (tokens/s "
            f"×{r.generation_tokens_per_s:.3f})"
        )
    ref = normistral_ratio()
    lines.append("")
    lines.append(
        f"Reference, NorMistral: {NORMISTRAL_REFERENCE['tokens_per_word_before']} → "
        f"{NORMISTRAL_REFERENCE['tokens_per_word_after']} tokens per Bokmål word ⇒ "
        f"×{ref['words_per_step_ratio']:.2f} words per token step "
        f"({100 * ref['fewer_steps_per_word']:.0f} % fewer steps per word; claimed: "
        f'"{NORMISTRAL_REFERENCE["claim"]}")'
    )
    s = report.settings
    lines.append("")
    lines.append(
        f"Settings: {s['device']} {s['dtype']}, {s['threads']} threads of {s['cpu_count']} "
        f"CPUs, median of {s['repeats']} runs after {s['warmup']} warm-up; prompt chunks of "
        f"{s['chunk_tokens']} tokens; {len(s['prompts'])} prompts of {s['prompt_words']} words, "
        f"{s['new_tokens']} new tokens each; load average before {s['load_average_before']}"
    )
    return "\n".join(lines)
