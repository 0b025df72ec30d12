"""Which core attention a decoder layer gets, and the start-up rules around it (CPU, no TE).

Jobs whose samples are not plainly causal (hybrid MNTP, bidirectional, document
attention) keep the TransformerEngine linears and get packed-sequence attention (TE's
THD subclass, or our SDPA one without TE), or with ``model.attention=dense``
megatron-core's local DotProductAttention. TE itself is absent here, so the TE spec is stood in for by the
local spec with a marker core attention; the GPU path itself is not run in this project.
"""

from __future__ import annotations

import pytest

from megatron_lang.config import get_preset, load_job_config
from megatron_lang.models import gpt
from megatron_lang.models.arch import to_transformer_config
from megatron_lang.training import build

pytestmark = pytest.mark.unit


class MarkerAttention:
    """Stands in for TEDotProductAttention in a TE-shaped spec."""


def _te_shaped_spec(**_kwargs):
    from megatron.core.models.gpt import gpt_layer_specs

    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    return gpt.with_core_attention(spec, MarkerAttention)


@pytest.mark.parametrize(
    "use_te,arbitrary_mask,packed,kind",
    [
        (True, False, False, "te"),
        (True, False, True, "te"),  # plain causal jobs are never packed
        (True, True, True, "te-packed"),
        (True, True, False, "local"),
        (False, False, False, "local"),
        (False, True, True, "sdpa-packed"),
        (False, True, False, "local"),
    ],
)
def test_core_attention_kind(use_te, arbitrary_mask, packed, kind):
    assert gpt.core_attention_kind(use_te, arbitrary_mask, packed) == kind


def test_with_core_attention_changes_only_the_core_attention():
    from megatron.core.models.gpt import gpt_layer_specs
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    new = gpt.with_core_attention(spec, MarkerAttention)
    old_attn, new_attn = spec.submodules.self_attention, new.submodules.self_attention
    assert new_attn.submodules.core_attention is MarkerAttention
    assert old_attn.submodules.core_attention is DotProductAttention  # the input is untouched
    assert new_attn.params == old_attn.params and new_attn.module is old_attn.module
    for name in ("linear_qkv", "linear_proj", "q_layernorm", "k_layernorm"):
        assert getattr(new_attn.submodules, name) is getattr(old_attn.submodules, name)
    assert new.submodules.mlp is spec.submodules.mlp
    assert new.submodules.input_layernorm is spec.submodules.input_layernorm


def test_te_spec_gets_packed_or_dense_attention_only_with_explicit_masks(monkeypatch):
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    from megatron_lang.models import packed_attention

    class PackedTEMarker:
        """Stands in for the TE THD subclass (TE is not installed here)."""

    monkeypatch.setattr(
        gpt_layer_specs(), "get_gpt_layer_with_transformer_engine_spec", _te_shaped_spec
    )
    monkeypatch.setattr(packed_attention, "te_packed_attention", lambda: PackedTEMarker)
    config = to_transformer_config(get_preset("tiny-llama"))
    plain = gpt.layer_spec(config, use_te=True)
    packed = gpt.layer_spec(config, use_te=True, arbitrary_mask=True, packed=True)
    dense = gpt.layer_spec(config, use_te=True, arbitrary_mask=True)
    core = lambda spec: spec.submodules.self_attention.submodules.core_attention  # noqa: E731
    assert core(plain) is MarkerAttention
    assert core(packed) is PackedTEMarker
    assert core(dense) is DotProductAttention
    # the rest of the (stand-in) TE spec is kept: its linears are what carry FP8
    for spec in (packed, dense):
        assert (
            spec.submodules.self_attention.submodules.linear_qkv
            is plain.submodules.self_attention.submodules.linear_qkv
        )
    local = gpt.layer_spec(config, use_te=False, arbitrary_mask=True)
    assert core(local) is DotProductAttention
    sdpa = gpt.layer_spec(config, use_te=False, arbitrary_mask=True, packed=True)
    assert core(sdpa) is packed_attention.PackedDotProductAttention


def gpt_layer_specs():
    from megatron.core.models.gpt import gpt_layer_specs

    return gpt_layer_specs


def test_describe_layer_spec():
    assert "TEDotProductAttention" in gpt.describe_layer_spec(True, False)
    assert "local DotProductAttention with dense" in gpt.describe_layer_spec(True, True)
    assert "THD" in gpt.describe_layer_spec(True, True, packed=True)
    assert "FP8" in gpt.describe_layer_spec(True, True, packed=True)
    assert "SDPA" in gpt.describe_layer_spec(False, True, packed=True)
    assert gpt.describe_layer_spec(False, True).startswith("local")


@pytest.mark.parametrize(
    "overrides,needs",
    [
        ([], False),
        (["objective.mntp_fraction=0.1"], True),
        (["objective.bidirectional=true"], True),
        (["data.document_attention=true"], True),
    ],
)
def test_needs_arbitrary_mask(overrides, needs):
    assert build.needs_arbitrary_mask(load_job_config(None, overrides)) is needs


def _startup(*overrides, world=1, **kwargs):
    cfg = load_job_config(None, ["model.preset=tiny-llama", "data.global_batch_size=8", *overrides])
    return build.check_startup(cfg, get_preset("tiny-llama"), world, **kwargs)


def test_masks_with_te_are_accepted_and_context_parallel_is_not(monkeypatch):
    monkeypatch.setattr(build, "transformer_engine_available", lambda: True)
    monkeypatch.setattr(build.torch.cuda, "is_available", lambda: True)
    for mask in ("objective.mntp_fraction=0.1", "data.document_attention=true"):
        _startup(mask)  # TE linears + packed THD core attention
        _startup(mask, "model.attention=dense")  # TE linears + local core attention
        _startup(mask, "model.fp8=hybrid")  # FP8 stays available
        with pytest.raises(build.StartupError, match="no context parallelism"):
            _startup(mask, "parallel.context_parallel=2", world=2)
    # the rejection does not depend on the machine: a plain dry run applies it too
    with pytest.raises(build.StartupError, match="no context parallelism"):
        _startup(
            "objective.bidirectional=true", "parallel.context_parallel=2", world=2, hardware=False
        )


def test_dry_run_as_on_cuda_te_catches_te_conflicts():
    # a plain dry run skips the machine checks ...
    _startup("model.fp8=hybrid", "model.transformer_engine=false", hardware=False)
    _startup("lora.enabled=true", hardware=False)
    # ... the dry run "as on CUDA+TE" applies them
    kw = {"hardware": False, "assume_cuda_te": True}
    _startup("model.fp8=hybrid", **kw)
    _startup("objective.mntp_fraction=0.1", "model.fp8=hybrid", **kw)
    with pytest.raises(build.StartupError, match="needs the TransformerEngine layer spec"):
        _startup("model.fp8=hybrid", "model.transformer_engine=false", **kw)
    with pytest.raises(build.StartupError, match="lora needs the local layer spec"):
        _startup("lora.enabled=true", **kw)
    _startup("lora.enabled=true", "model.transformer_engine=false", **kw)
    with pytest.raises(build.StartupError, match="context_parallel=2 needs TransformerEngine"):
        _startup("parallel.context_parallel=2", "model.transformer_engine=false", world=2, **kw)


@pytest.mark.distributed
def test_sliding_window_model_takes_explicit_masks_within_the_window():
    """megatron-core's softmax swaps any mask for its sliding-window causal one; within the
    window the trainer builds the model without it, and the masks it passes are applied."""
    import torch

    from tests._distributed import run_distributed
    from tests.models._window_jobs import window_outputs

    out = run_distributed(window_outputs, 1)[0]
    assert "explicit attention masks cannot be combined with window_size" in out["refused"]
    assert out["window_size"] is None
    torch.testing.assert_close(out["causal"], out["windowed"], rtol=0, atol=1e-6)
    assert (out["bidirectional"] - out["causal"]).abs().max() > 1e-3  # the mask is honoured
