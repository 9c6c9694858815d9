"""Training code: the fine-tuning loop (full, attention-only, peft LoRA) with validation on the user's records
(validate.py), augmentation that keeps answers true (augment.py), the synthetic shapes data and a never-seen
class for transfer (novel_shapes.py), and the VQ-VAE."""
