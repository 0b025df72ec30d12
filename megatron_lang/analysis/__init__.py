"""Analysis of checkpoints: per-word perplexity, weight divergence."""
