"""Build megatron-core's GPTModel for a Llama-family architecture.

The layer spec is TransformerEngine's when TE and a GPU are present (BF16/FP8
kernels), megatron-core's local spec otherwise (CPU, tests). Jobs with explicit
per-sample attention masks get the local core attention inside the TE spec.
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


def core_attention_kind(use_te: bool, arbitrary_mask: bool) -> str:
    """Which core attention a decoder layer gets: ``"te"`` or ``"local"``.

    TransformerEngine's ``TEDotProductAttention`` (flash/fused kernels, context
    parallelism) takes causal or padding masks, not the explicit ``[b, 1, s, s]``
    boolean mask of the hybrid MNTP / bidirectional objectives and of
    ``data.document_attention``. Those jobs get megatron-core's local
    ``DotProductAttention`` (which applies any mask), also inside the TE layer spec,
    so the TE linear layers and FP8 stay available.

    Args:
        use_te: the TransformerEngine layer spec is used.
        arbitrary_mask: the job passes an explicit per-sample attention mask.
    """
    return "te" if use_te and not arbitrary_mask else "local"


def describe_layer_spec(use_te: bool, arbitrary_mask: bool) -> str:
    """One line naming the linear layers and core attention a job gets (dry runs, logs)."""
    if not use_te:
        return "local (megatron-core linears and norms, local DotProductAttention)"
    if core_attention_kind(use_te, arbitrary_mask) == "te":
        return "TransformerEngine (TE linears with fused norms, TEDotProductAttention)"
    return (
        "TransformerEngine linears with fused norms (FP8-capable) + megatron-core's local "
        "DotProductAttention (explicit per-sample attention mask)"
    )


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


def layer_spec(config: Any, use_te: bool | None = None, arbitrary_mask: bool = False) -> Any:
    """Decoder layer spec: TE on GPU when available, local otherwise.

    With ``arbitrary_mask`` (hybrid MNTP, bidirectional, document attention) the TE
    spec keeps its linear layers but gets megatron-core's local
    ``DotProductAttention`` as core attention (see :func:`core_attention_kind`).
    """
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te is None:
        use_te = transformer_engine_available()
    if use_te:
        spec = gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(
            qk_layernorm=False, fp8=bool(getattr(config, "fp8", None))
        )
        if core_attention_kind(use_te, arbitrary_mask) == "local":
            from megatron.core.transformer.dot_product_attention import DotProductAttention

            spec = with_core_attention(spec, DotProductAttention)
        return spec
    return gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")


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
    if arbitrary_mask and getattr(config, "masked_softmax_fusion", False):
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
        transformer_layer_spec=layer_spec(config, use_te, arbitrary_mask),
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
