"""megatron_lang.adaptation."""
