"""Build megatron-core's GPTModel for a Llama-family architecture.

The layer spec is TransformerEngine's when TE and a GPU are present (BF16/FP8
kernels), megatron-core's local spec otherwise (CPU, tests).
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


def layer_spec(config: Any, use_te: bool | None = None) -> Any:
    """Decoder layer spec: TE on GPU when available, local otherwise."""
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te is None:
        use_te = transformer_engine_available()
    if use_te:
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(
            qk_layernorm=False, fp8=bool(getattr(config, "fp8", None))
        )
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
    rope_scaling = arch.rope_scaling or {}
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
    kwargs: dict[str, Any] = {}
    if rope_type == "llama3":
        kwargs["rope_scaling"] = True
        kwargs["rope_scaling_factor"] = float(rope_scaling.get("factor", 8.0))
    return GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(config, use_te),
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
