"""A GPTModel built from a converted checkpoint's metadata, loaded, and run for logits.

Used by ``--verify`` (one process, TP=1/PP=1) and by the tests at TP=2 and PP=2
(gloo ranks); model-parallel groups must already be set up by the caller.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from megatron_lang.checkpointing.metadata import CheckpointMetadata, load_metadata
from megatron_lang.models.arch import padded_vocab_size, to_transformer_config
from megatron_lang.models.gpt import build_gpt_model


def build_model_for_checkpoint(
    meta: CheckpointMetadata,
    params_dtype: torch.dtype = torch.float32,
    arbitrary_mask: bool = False,
    **config_overrides: Any,
) -> Any:
    """GPTModel (this rank's TP/PP part) whose vocabulary matches the checkpoint's padding.

    ``arbitrary_mask``: the caller passes explicit attention masks (bidirectional
    embeddings): local core attention also where the TE spec is used.

    Raises:
        ValueError: the padded vocabulary does not split over the current TP size.
    """
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    padded = meta.padded_vocab_size
    if padded % tp:
        raise ValueError(
            f"checkpoint vocabulary is padded to {padded} rows, not divisible by TP={tp}; "
            f"convert again with --tp-for-padding {tp}"
        )
    divisor = padded // tp
    if arbitrary_mask and meta.arch.sliding_window:
        # explicit masks and megatron-core's sliding window exclude each other (models/gpt.py);
        # callers keep sequences within the window, where it masks nothing
        config_overrides.setdefault("window_size", None)
    assert padded_vocab_size(meta.arch.vocab_size, divisor, tp) == padded
    config = to_transformer_config(
        meta.arch,
        params_dtype,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        use_cpu_initialization=True,
        perform_initialization=False,
        **config_overrides,
    )
    return build_gpt_model(
        meta.arch, config, make_vocab_size_divisible_by=divisor, arbitrary_mask=arbitrary_mask
    )


def load_checkpoint_into(model: Any, ckpt_dir: str | os.PathLike) -> None:
    """Load a ``torch_dist`` checkpoint into ``model`` (any TP/PP)."""
    from megatron_lang.checkpointing.checkpoint import load_model_weights

    load_model_weights(ckpt_dir, [model])


def load_model(
    ckpt_dir: str | os.PathLike,
    params_dtype: torch.dtype = torch.float32,
    arbitrary_mask: bool = False,
) -> tuple[Any, CheckpointMetadata]:
    """Build this rank's GPTModel for a converted checkpoint and load its weights."""
    meta = load_metadata(ckpt_dir)
    model = build_model_for_checkpoint(meta, params_dtype, arbitrary_mask)
    load_checkpoint_into(model, Path(ckpt_dir))
    model.eval()
    return model, meta


@contextlib.contextmanager
def single_process_model(
    ckpt_dir: str | os.PathLike,
    params_dtype: torch.dtype = torch.float32,
    arbitrary_mask: bool = False,
) -> Iterator[tuple[Any, CheckpointMetadata]]:
    """The checkpoint's model at TP=1/PP=1 in a one-process gloo group (verify, evaluation).

    The model-parallel state is torn down when the block ends.
    """
    from megatron.core import parallel_state

    from megatron_lang.conversion.megatron_io import single_process_group
    from megatron_lang.platform import ParallelLayout, initialize_model_parallel, set_seed

    a = load_metadata(ckpt_dir).arch
    with single_process_group(megatron_on_cpu=True):
        initialize_model_parallel(
            ParallelLayout(),
            num_layers=a.num_layers,
            num_attention_heads=a.num_attention_heads,
            num_query_groups=a.num_query_groups,
        )
        try:
            set_seed(0)
            yield load_model(ckpt_dir, params_dtype, arbitrary_mask)
        finally:
            parallel_state.destroy_model_parallel()


@torch.no_grad()
def forward_logits(model: Any, input_ids_BS: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    """Full-vocabulary logits ``[B, S, vocab_size]`` on the last pipeline stage, else None.

    Hidden states go from stage to stage with point-to-point sends; the
    vocab-parallel logits are gathered over the TP group and padding columns dropped.
    """
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = input_ids_BS.shape
    position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    first = parallel_state.is_pipeline_first_stage()
    last = parallel_state.is_pipeline_last_stage()
    if pp > 1 and not first:
        from megatron_lang.platform.distributed import collective_device

        # received in place: on the device NCCL sends to (a host tensor fails there)
        hidden = torch.empty(
            (s, b, model.config.hidden_size),
            dtype=model.config.params_dtype,
            device=collective_device(),
        )
        dist.recv(hidden, src=parallel_state.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden)
    out = model(input_ids_BS, position_ids, None)
    if pp > 1 and not last:
        dist.send(out.contiguous(), dst=parallel_state.get_pipeline_model_parallel_next_rank())
        return None
    logits = gather_from_tensor_model_parallel_region(out)
    return logits[..., :vocab_size].float()
