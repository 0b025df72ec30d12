"""Greedy continuations of prompts with an HF model directory, through ``transformers``.

This is the check a user makes after an export: the directory loads with
``AutoModelForCausalLM`` / ``AutoTokenizer`` alone (no megatron_lang code) and writes text.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


class GenerationError(RuntimeError):
    """The model directory cannot be loaded or a prompt is empty (the message says which)."""


@dataclass(frozen=True)
class Continuation:
    """One prompt and its greedy continuation."""

    prompt: str
    continuation: str
    """The generated text only (the prompt is not repeated)."""
    new_tokens: int

    def to_dict(self) -> dict:
        """As a JSON-ready dict."""
        return asdict(self)


def load_hf_model(model_dir: str | os.PathLike, device: str = "cpu", dtype=None):
    """``(tokenizer, model)`` of an HF directory, loaded by transformers alone, in eval mode.

    Args:
        model_dir: HF model directory (``config.json``, weights, tokenizer).
        device: torch device of the model.
        dtype: torch dtype (default ``torch.float32``).

    Raises:
        GenerationError: no ``config.json`` in ``model_dir`` or transformers cannot load it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise GenerationError(f"{path} is not an HF model directory (no config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise GenerationError(f"transformers cannot load {path}: {e}") from e
    return tok, model.to(device).eval()


def greedy_continuations(
    model_dir: str | os.PathLike, prompts: list[str], max_new_tokens: int = 30
) -> list[Continuation]:
    """Load ``model_dir`` with transformers and continue each prompt greedily.

    Raises:
        GenerationError: no ``config.json`` in ``model_dir``, transformers cannot load it,
            or a prompt is empty.
    """
    import torch

    for i, p in enumerate(prompts):
        if not p.strip():
            raise GenerationError(f"prompt {i} is empty")
    tok, model = load_hf_model(model_dir)
    out = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        new = gen[0, ids.shape[1] :]
        out.append(Continuation(prompt, tok.decode(new, skip_special_tokens=True), len(new)))
    return out
