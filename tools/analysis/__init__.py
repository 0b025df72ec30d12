"""Analysis CLIs: evaluate (per-word perplexity), divergence."""
