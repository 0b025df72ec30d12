"""megatron_lang.training."""
