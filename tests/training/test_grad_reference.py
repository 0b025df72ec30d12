"""Step-1 gradients of the real SmolLM2-135M against plain transformers, per parameter.

The gradient norm decides clipping and the NaN skip, and users read it in TensorBoard:
the first global batch's gradients (as the optimizer sees them, after megatron-core's
per-token scaling) must be transformers' for the same batch, tensor by tensor (each
megatron tensor cut into its HF tensors by the conversion's own mapping table), and the
logged norm must be ``clip_grad_norm_`` over ``model.parameters()``. The reference
takes the batch megatron_lang trained on (its input ids, positions, labels and loss
mask; MNTP samples arrive masked) and attends through a dense ``[s, s]`` mask built from
the batch's segments: causal, or both ways within a document for MNTP samples.

Three jobs over short documents (several per sample, so the end-of-document token is
an input): plain causal; a hybrid MNTP run with document attention whose micro-batches
hold causal and MNTP samples (packed attention); bidirectional (LLM2Vec).

What this found: SmolLM2's ``pad_token_id`` is its end-of-document token (2), and
transformers' ``nn.Embedding(padding_idx=2)`` drops that row's gradient wherever the
token is an input, so a plain transformers loop reports a smaller norm (document
attention: 12.1385 against the true 12.1895; the issue's 7.1112 vs 7.1168 and the rest).
megatron_lang's gradient is the loss's gradient; the reference here is made to take it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests._distributed import run_distributed
from tests.training import _jobs
from tests.training.test_bf16 import _smollm2_overrides

pytestmark = pytest.mark.distributed

REL_TOLERANCE = {"causal": 1e-3, "hybrid": 1e-3, "bidirectional": 5e-3}
"""||g - g_ref|| / ||g_ref|| per tensor, fp32. Measured (worst tensor, a late layer's
norm weight): causal 2.8e-4, hybrid 2.3e-4; the EOD row without the padding_idx fix
0.33. Bidirectional: 2.2e-3, while transformers in fp32 is within 4e-5 of itself in
float64 -- a residual on the megatron side, not explained yet (megatron's dense-mask
attention is off by as much the other way); held here so that it cannot grow."""
NORM_TOLERANCE = {"causal": 1e-4, "hybrid": 1e-4, "bidirectional": 2e-3}
"""Relative, logged norm vs transformers'. Measured: causal 5e-6, hybrid 7e-6;
bidirectional 169.6958 vs 169.8495 (9e-4, see above)."""


@pytest.fixture(scope="module")
def short_documents(smollm2_job, smollm2_fp32_dir, tmp_path_factory) -> str:
    """A blend of the Danish GIMP pages cut into paragraphs: several documents per sample."""
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    src = Path(smollm2_job["blend"]).parent / "da.jsonl"
    root = tmp_path_factory.mktemp("paragraphs")
    lines = []
    for page in src.read_text().splitlines():
        for para in json.loads(page)["text"].split("\n"):
            if len(para.strip()) >= 40:
                lines.append(json.dumps({"text": para.strip()}))
    (root / "da.jsonl").write_text("\n".join(lines) + "\n")
    preprocess(
        PreprocessConfig(
            inputs=[str(root / "da.jsonl")],
            output_prefix=str(root / "da"),
            tokenizer=str(smollm2_fp32_dir),
            append_eod=True,
            progress=False,
        )
    )
    blend = root / "blend.yaml"
    blend.write_text(
        f'root: {root}\nsplit: "90,10,0"\nsources:\n'
        "  - {name: da_para, path: da_text_document, weight: 1.0, language: da}\n"
    )
    return str(blend)


def _allowed(batch: dict) -> torch.Tensor | None:
    """``[b, 1, s, s]`` True where a token may attend (None: plain causal)."""
    b, s = batch["tokens"].shape
    if "segments_host" not in batch:
        return None
    cu, kinds = batch["segments_host"]  # offsets into the b*s flattened tokens
    lengths = torch.tensor(cu).diff()
    segment = torch.repeat_interleave(torch.arange(len(kinds)), lengths).view(b, s)
    bidir = torch.repeat_interleave(torch.tensor(kinds), lengths).view(b, s)
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    return (same & (causal | bidir[:, :, None]))[:, None]


def _reference(hf_dir, batches, dtype=torch.float32) -> tuple[dict, float, float]:
    """transformers' gradients, ``clip_grad_norm_`` and loss for one global batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype)
    # SmolLM2's config has pad_token_id = eos_token_id = 2, and transformers builds the
    # embedding as nn.Embedding(padding_idx=2), which drops the gradient of row 2 wherever
    # token 2 is an *input*: the end-of-document token of every packed sample. That is
    # not the loss's gradient (the token is read by what follows it), and megatron_lang
    # trains the row; the reference takes the true gradient too.
    assert model.model.embed_tokens.padding_idx == 2
    model.model.embed_tokens.padding_idx = None
    model.train()
    total = sum(float(b["loss_mask"].sum()) for b in batches)
    loss_sum = 0.0
    for b in batches:
        allowed = _allowed(b)
        mask = None
        if allowed is not None:
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        logits = model(
            input_ids=b["tokens"], position_ids=b["position_ids"], attention_mask=mask
        ).logits
        ce = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), b["labels"].flatten(), reduction="none"
        )
        loss = (ce * b["loss_mask"].flatten().to(dtype)).sum() / total  # mean over the global batch
        loss.backward()
        loss_sum += loss.item()
    grads = {n: p.grad for n, p in model.named_parameters()}
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    return grads, norm, loss_sum


def _as_hf(grads: dict, checkpoint: str) -> dict:
    """megatron gradients cut into HF tensors by the family's mapping table."""
    from megatron_lang.checkpointing.metadata import load_metadata
    from megatron_lang.conversion.families import FAMILIES
    from megatron_lang.conversion.mapping import expand

    arch = load_metadata(checkpoint).arch
    out = {}
    for c in expand(FAMILIES[arch.family].rules, arch):
        t = grads[c.megatron]
        if c.rule.vocab_rows:
            assert not t[arch.vocab_size :].any(), "padded vocabulary rows got gradient"
            t = t[: arch.vocab_size]
        out.update(zip(c.hf, c.rule.transform.to_hf(t, arch)))
    return out


def test_step_one_gradients_and_norm_equal_transformers(
    smollm2_job, smollm2_fp32_dir, short_documents
):
    base = _smollm2_overrides(smollm2_job, "fp32") + [
        "data.seq_length=128",
        "data.micro_batch_size=2",
        "data.global_batch_size=4",
    ]
    docs = [f"data.blend={short_documents}", "data.document_attention=true"]
    mntp = ["objective.mask_token=<filename>"]
    runs = {
        "causal": base + [f"data.blend={short_documents}"],
        "hybrid": base + docs + mntp + ["objective.mntp_fraction=0.5"],
        "bidirectional": base + docs + mntp + ["objective.bidirectional=true"],
    }
    results = run_distributed(_jobs.step_one_gradients, 1, runs)[0]
    kinds = results["hybrid"]["batches"]
    assert any(len(set(b["segments_host"][1])) == 2 for b in kinds), "no mixed micro-batch"
    assert len(results["hybrid"]["batches"][0]["segments_host"][1]) > 4  # several docs
    for name, mc in results.items():
        ref, ref_norm, ref_loss = _reference(smollm2_fp32_dir, mc["batches"])
        assert math.isclose(mc["metrics"]["loss"], ref_loss, rel_tol=1e-5), name
        got = _as_hf(mc["grads"], smollm2_job["checkpoint"])
        assert set(got) == set(ref), name
        errors = {k: float((got[k] - ref[k]).norm() / ref[k].norm()) for k in ref}
        worst = max(errors, key=errors.get)
        print(f"{name}: norm {mc['norm']:.6f} vs {ref_norm:.6f}, worst {worst} {errors[worst]:.1e}")
        assert errors[worst] < REL_TOLERANCE[name], (name, worst, errors[worst])
        assert math.isclose(mc["norm"], ref_norm, rel_tol=NORM_TOLERANCE[name]), (name, ref_norm)
