"""Data: text -> Megatron indexed datasets, blends, batch builders."""
