"""Model shapes, megatron-core GPTModel construction, full <-> sharded state dicts."""
