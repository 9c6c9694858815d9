"""LoRA through peft: the run's adapters are peft's own LoRA layers on our model's projections.

`add_lora` puts peft's layers (lora_B zero, so training starts from the pretrained function exactly) on the text
decoder's attention and MLP projections and returns the peft config; the run saves the adapter in peft's format
with Hugging Face key names (model/adapters.py), which transformers + peft load as they are, and
`jobs.merge_adapter` folds it into a plain checkpoint. Nothing of the LoRA arithmetic is ours.
"""

from __future__ import annotations

from torch import nn

from model.adapters import DEFAULT_TARGETS, adapter_state_dict, inject, lora_config, merged_state_dict, save_adapter

__all__ = ["DEFAULT_TARGETS", "add_lora", "adapter_state_dict", "merged_state_dict", "save_adapter"]


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, targets: str | list[str] = DEFAULT_TARGETS):
    """Freeze `model` and put trainable peft LoRA layers on the targeted projections; returns the LoraConfig."""
    model.requires_grad_(False)
    config = lora_config(rank, alpha, targets)
    inject(model, config)
    return config
