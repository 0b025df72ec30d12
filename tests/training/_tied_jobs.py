"""Training jobs that also return what the metrics do not show (module-level, picklable)."""

from __future__ import annotations

from tests.training import _jobs


def train_with_tied_copies(overrides: list[str]) -> tuple[list[dict], dict]:
    """Train; return the history and this rank's copies of the tied embedding after training.

    ``{"embedding": ...}`` on the first pipeline stage (the input embedding) and
    ``{"output": ...}`` on the last (the output layer's weight, which is the same
    parameter at PP=1 and a copy kept in sync by megatron-core at PP>1).
    """
    from megatron.core import parallel_state as ps

    from megatron_lang.training import trainer as trainer_mod

    copies: dict = {}
    original = trainer_mod.Trainer.train

    def train_and_keep_weights(self) -> int:
        code = original(self)
        (chunk,) = self.model
        module = getattr(chunk, "module", chunk)
        if ps.is_pipeline_first_stage():
            copies["embedding"] = module.embedding.word_embeddings.weight.detach().clone()
        if ps.is_pipeline_last_stage():
            copies["output"] = module.shared_embedding_or_output_weight().detach().clone()
        return code

    trainer_mod.Trainer.train = train_and_keep_weights
    try:
        return _jobs.train(overrides), copies
    finally:
        trainer_mod.Trainer.train = original
