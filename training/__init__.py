"""Training code: the synthetic shapes data, the fine-tuning loop (full, attention-only, LoRA) and the VQ-VAE."""
