"""Write our PaliGemma as a Hugging Face checkpoint folder that our loader and transformers both read.

Weights go under the original Hub names (`vision_tower.vision_model.*`, `multi_modal_projector.*`,
`language_model.model.*`), the layout every PaliGemma release uses and transformers converts on load; the tied
lm_head is not written, as in the releases. config.json comes from `PaliGemmaConfig.to_hf_dict`, so a saved
folder round-trips exactly through `from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .loading import resolve_dtype
from .paligemma import PaliGemma

HUB_PREFIXES = (
    ("vision_tower.", "vision_tower.vision_model."),
    ("language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def hub_key(name: str) -> str:
    """Our parameter name -> the Hub checkpoint key."""
    for ours, theirs in HUB_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    return name


def save_pretrained(
    model: PaliGemma,
    folder: str | Path,
    dtype: torch.dtype | str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model.safetensors and config.json (plus tokenizer.json and preprocessor_config.json when the model
    carries a tokenizer and an image processor). dtype None keeps the weights' own dtype; `state_dict` replaces
    the model's own weights (a LoRA fine-tune passes its merged weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = model.dtype if dtype is None else resolve_dtype(dtype)
    state = model.state_dict() if state_dict is None else state_dict
    tensors = {hub_key(k): v.detach().to("cpu", target).contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    dtype_name = str(target).removeprefix("torch.")
    config = model.config.to_hf_dict() | {"torch_dtype": dtype_name, "dtype": dtype_name}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if model.tokenizer is not None:
        model.tokenizer.tok.save(str(folder / "tokenizer.json"))
    if model.image_processor is not None:
        model.image_processor.save_pretrained(folder)
    return folder
