"""Mean-pooled sequence embeddings from a checkpoint (LLM2Vec-style encoders).

After bidirectional MNTP training (``objective.bidirectional``), a decoder works
as an encoder: run it with full attention over the text and average the final
hidden states (after the final norm) over the text's tokens. The model is built
at TP=1/PP=1 in this process (a one-rank gloo group when none exists).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)


def embedding_attention_mask(valid_BS: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """megatron-core attention mask ``[B, 1, S, S]`` (True = masked out) for right-padded texts.

    Padding keys are masked out; with ``bidirectional=False`` also future keys.
    Padding queries keep their own position (no all-masked rows).
    """
    b, s = valid_BS.shape
    allowed_BSS = valid_BS[:, None, :].expand(b, s, s).clone()
    if not bidirectional:
        allowed_BSS &= torch.ones(s, s, dtype=torch.bool).tril()
    allowed_BSS |= torch.eye(s, dtype=torch.bool)
    return (~allowed_BSS).unsqueeze(1)


@torch.no_grad()
def final_hidden_states(
    model, tokens_BS: torch.Tensor, valid_BS: torch.Tensor, bidirectional: bool = True
) -> torch.Tensor:
    """Final-norm outputs ``[B, S, hidden]`` of a TP=1/PP=1 GPTModel.

    Args:
        model: megatron-core GPTModel (one stage holding all layers).
        tokens_BS: right-padded token ids.
        valid_BS: True at text tokens, False at padding.
        bidirectional: full attention over the text (else causal).
    """
    captured: list[torch.Tensor] = []
    handle = model.decoder.final_layernorm.register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    try:
        b, s = tokens_BS.shape
        position_ids_BS = torch.arange(s).unsqueeze(0).expand(b, s)
        mask = embedding_attention_mask(valid_BS, bidirectional)
        model(tokens_BS, position_ids_BS, mask)
    finally:
        handle.remove()
    return captured[-1].transpose(0, 1).float()  # [S, B, H] -> [B, S, H]


def mean_pool(hidden_BSH: torch.Tensor, valid_BS: torch.Tensor) -> torch.Tensor:
    """Average ``hidden_BSH`` over the valid positions: ``[B, hidden]``."""
    weights_BS1 = valid_BS.to(hidden_BSH.dtype).unsqueeze(-1)
    return (hidden_BSH * weights_BS1).sum(1) / weights_BS1.sum(1).clamp(min=1.0)


def _tokenize(ckpt_dir: Path, texts: list[str], max_length: int | None) -> list[list[int]]:
    from megatron_lang.checkpointing.metadata import tokenizer_path
    from megatron_lang.data.tokenizer import load_tokenizer

    tok_dir = tokenizer_path(ckpt_dir)
    if tok_dir is None:
        raise FileNotFoundError(f"checkpoint {ckpt_dir} has no tokenizer/ folder")
    path = tok_dir
    if not (tok_dir / "tokenizer.json").is_file():
        models = sorted(tok_dir.glob("*.model"))
        path = models[0] if models else tok_dir
    tok, _, _ = load_tokenizer(path, backend="sentencepiece" if path.suffix == ".model" else "hf")
    flat, lengths = tok.encode_batch(texts)
    out, start = [], 0
    for n in lengths.tolist():
        ids = [int(t) for t in flat[start : start + n]]
        start += n
        if not ids:
            raise ValueError(f"text {len(out)} encodes to no tokens")
        out.append(ids[:max_length] if max_length else ids)
    return out


def sequence_embeddings(
    ckpt_dir: str | os.PathLike,
    texts: list[str],
    bidirectional: bool = True,
    batch_size: int = 8,
    max_length: int | None = 512,
) -> torch.Tensor:
    """Mean-pooled final hidden states of ``texts``: ``[N, hidden]`` (fp32).

    Args:
        ckpt_dir: a converted or training checkpoint (with ``megatron_lang.json``
            and ``tokenizer/``, e.g. ``ckpt/iter_0001000``).
        texts: the texts (encoded without special tokens).
        bidirectional: full attention over each text (a model trained with
            ``objective.bidirectional``); False: causal attention.
        batch_size: texts per forward pass.
        max_length: truncate texts to this many tokens (None: no limit).
    """
    from megatron_lang.conversion.megatron_model import single_process_model

    ckpt_dir = Path(ckpt_dir)
    ids = _tokenize(ckpt_dir, list(texts), max_length)
    out: list[torch.Tensor] = []
    with single_process_model(ckpt_dir, torch.float32, arbitrary_mask=True) as (model, meta):
        window = meta.arch.sliding_window
        longest = max((len(x) for x in ids), default=0)
        if window and longest > window:
            raise ValueError(
                f"{ckpt_dir}: a text has {longest} tokens, more than the model's sliding window "
                f"({window}), which explicit attention masks cannot honour; set max_length <= "
                f"{window}"
            )
        for i in range(0, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            s = max(len(x) for x in chunk)
            tokens_BS = torch.zeros(len(chunk), s, dtype=torch.long)
            valid_BS = torch.zeros(len(chunk), s, dtype=torch.bool)
            for r, x in enumerate(chunk):
                tokens_BS[r, : len(x)] = torch.tensor(x)
                valid_BS[r, : len(x)] = True
            hidden_BSH = final_hidden_states(model, tokens_BS, valid_BS, bidirectional)
            out.append(mean_pool(hidden_BSH, valid_BS))
    log.info("embedded %d texts with %s (bidirectional=%s)", len(ids), ckpt_dir, bidirectional)
    return torch.cat(out)
