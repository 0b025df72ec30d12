"""HF <-> Megatron conversion: one declarative mapping table per model family."""
