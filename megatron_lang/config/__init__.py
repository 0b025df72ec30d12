"""megatron_lang.config."""
