"""Build megatron-core's GPTModel for a Llama-family architecture.

The layer spec is TransformerEngine's when TE and a GPU are present (BF16/FP8
kernels), megatron-core's local spec otherwise (CPU, tests). Jobs whose samples are not
plainly causal (hybrid MNTP, bidirectional, document attention) get packed-sequence
attention (TE THD, or PyTorch SDPA without TE), or with ``model.attention=dense``
megatron-core's local core attention with dense masks, the reference.
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lang.models.arch import LlamaArch, padded_vocab_size


def transformer_engine_available() -> bool:
    """True when TransformerEngine imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_fusions(use_te: bool) -> dict[str, bool]:
    """TransformerConfig fusion flags for CUDA runs (empty on CPU).

    ``to_transformer_config`` switches megatron-core's fused kernels off so the
    same config runs on CPU; on GPUs the trainer and ``bench/gpu_mfu.py`` turn
    on the ones whose kernels are importable here.
    """
    if not torch.cuda.is_available():
        return {}
    try:
        import fused_weight_gradient_mlp_cuda  # noqa: F401  (Apex)

        grad_accum_fusion = True
    except ImportError:
        grad_accum_fusion = False
    from megatron.core.models.common.embeddings import rope_utils

    rope_fusion = use_te and getattr(rope_utils, "fused_apply_rotary_pos_emb", None) is not None
    return {
        "bias_activation_fusion": True,
        "cross_entropy_loss_fusion": True,
        "gradient_accumulation_fusion": grad_accum_fusion,
        "apply_rope_fusion": rope_fusion,
    }


def core_attention_kind(use_te: bool, arbitrary_mask: bool, packed: bool = False) -> str:
    """Which core attention a decoder layer gets.

    - ``"te"``: TransformerEngine's ``TEDotProductAttention``, causal (no explicit masks);
    - ``"te-packed"``: the same kernels over packed sequences (THD, ``cu_seqlens``):
      per-document causal or bidirectional segments (hybrid MNTP, bidirectional,
      ``data.document_attention``), see :mod:`megatron_lang.models.packed_attention`;
    - ``"sdpa-packed"``: our ``PackedDotProductAttention`` (PyTorch SDPA per segment)
      for the same packed batches without TransformerEngine;
    - ``"local"``: megatron-core's ``DotProductAttention``: causal, or the dense
      ``[b, 1, s, s]`` masks of ``model.attention=dense`` (the reference).

    Args:
        use_te: the TransformerEngine layer spec is used.
        arbitrary_mask: samples are not plainly causal (objectives, document attention).
        packed: those samples come packed (segments) rather than with dense masks.
    """
    if not arbitrary_mask:
        return "te" if use_te else "local"
    if packed:
        return "te-packed" if use_te else "sdpa-packed"
    return "local"


def describe_layer_spec(use_te: bool, arbitrary_mask: bool, packed: bool = False) -> str:
    """One line naming the linear layers and core attention a job gets (dry runs, logs)."""
    kind = core_attention_kind(use_te, arbitrary_mask, packed)
    linears = (
        "TransformerEngine linears with fused norms (FP8-capable)"
        if use_te
        else "local megatron-core linears and norms"
    )
    attention = {
        "te": "TEDotProductAttention (flash/fused, causal)",
        "te-packed": (
            "TEDotProductAttention on packed sequences (THD, cu_seqlens; flash/fused: "
            "padding_causal for causal samples, padding for MNTP/bidirectional ones)"
        ),
        "sdpa-packed": (
            "PackedDotProductAttention (PyTorch varlen flash attention on CUDA bf16/fp16, "
            "SDPA on runs of equal segments elsewhere; causal or bidirectional per segment; "
            "no [S, S] mask)"
        ),
        "local": (
            "megatron-core's local DotProductAttention"
            + (" with dense [S, S] masks (model.attention=dense)" if arbitrary_mask else "")
        ),
    }[kind]
    return f"{linears} + {attention}"


def with_core_attention(spec: Any, core_attention: Any) -> Any:
    """A copy of a GPT decoder-layer spec with another ``core_attention`` module.

    Only the ``core_attention`` of the self-attention submodules changes; the
    layer's other submodules (linears, norms, MLP) and their params are kept.
    """
    from dataclasses import replace

    attention = spec.submodules.self_attention
    return replace(
        spec,
        submodules=replace(
            spec.submodules,
            self_attention=replace(
                attention,
                submodules=replace(attention.submodules, core_attention=core_attention),
            ),
        ),
    )


def layer_spec(
    config: Any, use_te: bool | None = None, arbitrary_mask: bool = False, packed: bool = False
) -> Any:
    """Decoder layer spec: TE on GPU when available, local otherwise.

    The core attention follows :func:`core_attention_kind`: with ``arbitrary_mask`` it is
    the packed-sequence attention (``packed``) or megatron-core's local
    ``DotProductAttention`` for dense masks; the layer's linears and norms stay TE's or
    local.
    """
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te is None:
        use_te = transformer_engine_available()
    kind = core_attention_kind(use_te, arbitrary_mask, packed)
    if use_te:
        spec = gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(
            qk_layernorm=False, fp8=bool(getattr(config, "fp8", None))
        )
        if kind == "te-packed":
            from megatron_lang.models.packed_attention import te_packed_attention

            spec = with_core_attention(spec, te_packed_attention())
        elif kind == "local":
            from megatron.core.transformer.dot_product_attention import DotProductAttention

            spec = with_core_attention(spec, DotProductAttention)
        return spec
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    if kind == "sdpa-packed":
        from megatron_lang.models.packed_attention import PackedDotProductAttention

        spec = with_core_attention(spec, PackedDotProductAttention)
    return spec


def build_gpt_model(
    arch: LlamaArch,
    config: Any,
    pre_process: bool | None = None,
    post_process: bool | None = None,
    vp_stage: int | None = None,
    make_vocab_size_divisible_by: int = 128,
    use_te: bool | None = None,
    padded_vocab: int | None = None,
    arbitrary_mask: bool = False,
    packed: bool = False,
) -> Any:
    """GPTModel for ``arch`` on this rank's pipeline stage.

    Args:
        arch: model shape.
        config: megatron-core ``TransformerConfig`` (see ``to_transformer_config``).
        pre_process / post_process: whether this stage holds the embedding /
            the output layer; default from the pipeline rank.
        vp_stage: virtual pipeline stage index for interleaved schedules.
        make_vocab_size_divisible_by: vocab padding divisor (times TP).
        use_te: force the TE (True) or local (False) layer spec.
        padded_vocab: use this padded vocabulary size (e.g. the one saved in a
            checkpoint) instead of padding ``arch.vocab_size``; must divide by TP.
        arbitrary_mask: the model will get explicit per-sample attention masks
            (MNTP objectives, document attention): local core attention, also
            with the TE spec (see :func:`layer_spec`).
        packed: those masks come as packed segments (``model.attention=packed``):
            TE THD attention or our SDPA attention instead of the dense local one.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(
            ignore_virtual=False, vp_stage=vp_stage
        )
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(
            ignore_virtual=False, vp_stage=vp_stage
        )
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if padded_vocab is None:
        padded_vocab = padded_vocab_size(arch.vocab_size, make_vocab_size_divisible_by, tp)
    if padded_vocab < arch.vocab_size or padded_vocab % tp:
        raise ValueError(
            f"padded vocabulary size {padded_vocab} must be >= vocab_size {arch.vocab_size} "
            f"and divisible by TP={tp}"
        )
    if arbitrary_mask and not packed and getattr(config, "masked_softmax_fusion", False):
        # the fused causal softmax kernel ignores the mask it is given
        raise ValueError("explicit attention masks need masked_softmax_fusion=False")
    if arbitrary_mask and getattr(config, "window_size", None) is not None:
        # megatron-core's softmax (fused_softmax.py) replaces any mask it is given with its
        # own sliding-window causal mask when window_size is set
        raise ValueError(
            f"explicit attention masks cannot be combined with window_size={config.window_size}: "
            "megatron-core would replace the mask with a sliding-window causal one; build the "
            "config without window_size (equivalent when the sequences fit in the window)"
        )
    rope_scaling = arch.rope_scaling or {}
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
    kwargs: dict[str, Any] = {}
    if rope_type == "llama3":
        kwargs["rope_scaling"] = True
        kwargs["rope_scaling_factor"] = float(rope_scaling.get("factor", 8.0))
    return GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(config, use_te, arbitrary_mask, packed),
        vocab_size=padded_vocab,
        max_sequence_length=arch.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(arch.rotary_base),
        vp_stage=vp_stage,
        **kwargs,
    )
