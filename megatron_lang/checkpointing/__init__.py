"""megatron_lang.checkpointing."""
