"""Worker-side helpers for the engine tests: a tiny Llama-shaped GPTModel at any layout.

Every function here runs inside ranks started by ``tests._distributed.run_distributed``.
"""

from __future__ import annotations

from functools import partial

import torch

from megatron_lang.models.arch import LlamaArch, tiny_llama, to_transformer_config
from megatron_lang.models.gpt import build_gpt_model
from megatron_lang.platform import ParallelLayout, initialize_model_parallel, set_seed

SEQ = 16
VOCAB = 128


def arch() -> LlamaArch:
    """RMSNorm, SwiGLU, RoPE, GQA (4 heads / 2 KV groups), untied output layer."""
    return tiny_llama(vocab_size=VOCAB, tie_word_embeddings=False)


def setup(tp: int = 1, pp: int = 1, seed: int = 1234, **config_overrides):
    """Create the parallel groups and this rank's model (fp32, local spec)."""
    a = arch()
    layout = ParallelLayout(tensor_parallel=tp, pipeline_parallel=pp)
    initialize_model_parallel(
        layout, a.num_layers, a.num_attention_heads, a.num_query_groups, seq_length=SEQ
    )
    set_seed(seed)
    config = to_transformer_config(
        a, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, **config_overrides
    )
    # divisor 64: the padded vocabulary is 128 at TP=1 and at TP=2
    return build_gpt_model(a, config, make_vocab_size_divisible_by=64), config


def batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic token batch of ``n`` sequences (same on every rank)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, SEQ + 1), generator=g)
    return {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "position_ids": torch.arange(SEQ).expand(n, SEQ).contiguous(),
    }


def microbatches(b: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    n = b["tokens"].shape[0]
    return [{k: v[i : i + size] for k, v in b.items()} for i in range(0, n, size)]


def _loss_func(output_tensor: torch.Tensor):
    loss = output_tensor.float().mean()
    return loss, {"loss": loss.detach().clone()}


def _forward_step(data_iterator, model):
    mb = next(data_iterator)
    out = model(mb["tokens"], mb["position_ids"], None, labels=mb["labels"])
    return out, _loss_func


def _logits_loss(output_tensor: torch.Tensor):
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    logits = gather_from_tensor_model_parallel_region(output_tensor)
    return output_tensor.sum() * 0.0, {"logits": logits.detach().clone()}


def _logits_step(data_iterator, model):
    mb = next(data_iterator)
    return model(mb["tokens"], mb["position_ids"], None), _logits_loss


def forward_backward(model, config, microbatch_list, forward_only: bool = False, logits=False):
    """Run megatron-core's schedule (pipelined when PP > 1) over ``microbatch_list``.

    Returns the per-microbatch loss dicts (non-empty on the last pipeline stage only).
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    mb_size = microbatch_list[0]["tokens"].shape[0]
    return get_forward_backward_func()(
        forward_step_func=_logits_step if logits else _forward_step,
        data_iterator=iter(microbatch_list),
        model=[model],
        num_microbatches=len(microbatch_list),
        seq_length=SEQ,
        micro_batch_size=mb_size,
        forward_only=forward_only,
    )


def gathered_logits(model, config, b: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Full-vocabulary logits [b, s, V] on the last pipeline stage, None elsewhere."""
    with torch.no_grad():
        out = forward_backward(model, config, [b], forward_only=True, logits=True)
    return out[0]["logits"] if out else None


def last_stage_value(values: list, key=lambda v: v is not None):
    """The value reported by ranks of the last pipeline stage (they all agree)."""
    found = [v for v in values if key(v)]
    assert found, "no rank reported a value"
    return found[-1]


sgd = partial(torch.optim.SGD, lr=0.1)
