"""``--verify``: run the HF model and the converted Megatron model on a fixed prompt.

Reports the max abs logit difference; above the tolerance, compares the
outputs module by module (embedding, each layer, final norm, logits) and names
the first one that diverges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from megatron_lang.checkpointing.metadata import load_metadata, tokenizer_path
from megatron_lang.platform import get_logger

log = get_logger(__name__)

PROMPT = "The quick brown fox jumps over the lazy dog. Copenhagen is the capital of Denmark."


class VerificationError(RuntimeError):
    """Megatron and HF logits differ by more than the tolerance."""


@dataclass
class VerifyReport:
    """Outcome of a verification."""

    max_abs_diff: float
    tolerance: float
    num_tokens: int
    module_diffs: dict[str, float] = field(default_factory=dict)
    first_diverging: str | None = None

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def summary(self) -> str:
        """One line for logs and CLIs."""
        s = (
            f"max abs logit diff {self.max_abs_diff:.3e} over {self.num_tokens} tokens "
            f"(tolerance {self.tolerance:.1e}): {'OK' if self.ok else 'FAILED'}"
        )
        if self.first_diverging:
            s += f"; first diverging module: {self.first_diverging}"
        return s


def prompt_ids(ckpt_dir: str | os.PathLike, vocab_size: int) -> torch.Tensor:
    """``[1, S]`` ids of :data:`PROMPT` with the checkpoint's tokenizer (fixed ids without one)."""
    tok_dir = tokenizer_path(ckpt_dir)
    if tok_dir is not None and any(tok_dir.glob("tokenizer*")):
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(tok_dir).encode(PROMPT, add_special_tokens=False)
        return torch.tensor([ids[:64]])
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (1, 16), generator=gen)


def _capture(modules: dict[str, torch.nn.Module], seq_first: bool) -> tuple[dict, list]:
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in modules.items():

        def hook(_m, _inp, output, name=name):
            t = output[0] if isinstance(output, tuple) else output
            t = t.detach().float()
            out[name] = t.transpose(0, 1) if seq_first else t

        handles.append(mod.register_forward_hook(hook))
    return out, handles


def _hf_outputs(hf_path: str | os.PathLike, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    from transformers import AutoModelForCausalLM

    p = Path(hf_path)
    if p.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(
            p.parent, gguf_file=p.name, dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    model.eval()
    inner = model.model
    mods = {"embedding": inner.embed_tokens}
    mods.update({f"layer {i}": layer for i, layer in enumerate(inner.layers)})
    mods["final norm"] = inner.norm
    acts, handles = _capture(mods, seq_first=False)
    with torch.no_grad():
        logits = model(ids).logits.float()
    for h in handles:
        h.remove()
    return logits, acts


def _megatron_outputs(ckpt_dir: str | os.PathLike, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    from megatron_lang.conversion.megatron_model import forward_logits, single_process_model

    with single_process_model(ckpt_dir, torch.float32) as (model, meta):
        mods = {"embedding": model.embedding}
        mods.update({f"layer {i}": layer for i, layer in enumerate(model.decoder.layers)})
        mods["final norm"] = model.decoder.final_layernorm
        acts, handles = _capture(mods, seq_first=True)
        logits = forward_logits(model, ids, meta.arch.vocab_size)
        for h in handles:
            h.remove()
    return logits, acts


def verify_conversion(
    hf_path: str | os.PathLike,
    ckpt_dir: str | os.PathLike,
    tolerance: float = 1e-3,
    input_ids: torch.Tensor | None = None,
    exported: bool = False,
) -> VerifyReport:
    """Compare fp32 logits of the HF model at ``hf_path`` and the Megatron checkpoint.

    ``exported``: ``hf_path`` was exported from ``ckpt_dir`` (``megatron_to_hf``), so the
    two share the checkpoint's vocabulary even when that vocabulary was changed at
    conversion time; without it a changed vocabulary cannot be compared with its source.

    Raises:
        ValueError: the checkpoint records a vocabulary change and ``exported`` is False.
        VerificationError: the max abs difference exceeds ``tolerance`` (the
            message names the first diverging module).
    """
    meta = load_metadata(ckpt_dir)
    if meta.extra.get("vocab_change") and not exported:
        raise ValueError(
            "--verify compares against the source model; not possible after a vocabulary change"
        )
    ids = input_ids if input_ids is not None else prompt_ids(ckpt_dir, meta.arch.vocab_size)
    hf_logits, hf_acts = _hf_outputs(hf_path, ids)
    meg_logits, meg_acts = _megatron_outputs(ckpt_dir, ids)
    diff = (hf_logits - meg_logits).abs().max().item()
    report = VerifyReport(diff, tolerance, ids.numel())
    if not report.ok:
        for name in hf_acts:
            d = (hf_acts[name] - meg_acts[name]).abs().max().item()
            report.module_diffs[name] = d
            if report.first_diverging is None and d > tolerance:
                report.first_diverging = name
        report.module_diffs["logits"] = diff
        report.first_diverging = report.first_diverging or "logits (output layer)"
        err = VerificationError(report.summary())
        err.report = report
        raise err
    log.info(report.summary())
    return report
