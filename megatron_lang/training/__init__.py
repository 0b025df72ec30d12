"""Training: trainer loop, optimizer/scheduler, stages, LoRA, evaluation, throughput metrics."""
