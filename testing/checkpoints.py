"""Random PaliGemma checkpoints written by transformers, the reference the tests hold our model to.

No machine here reaches a model hub, so every checkpoint we run without downloaded weights is made here: the
weights by transformers' own `save_pretrained` (so the files are what a user's downloaded folder looks like), the
tokenizer with the `tokenizers` library in PaliGemma's special-token layout (<pad> 0, <eos> 1, <bos> 2, then
1024 <locNNNN>, 128 <segNNN> and <image> after the text ids), and a SigLIP preprocessor_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.config import PaliGemmaConfig
from model.image_processing import ImageProcessor
from training.recipes import small_config
from training.vocab import write_tokenizer

LAYOUTS = ("transformers", "hub", "in-memory")


def write_preprocessor_config(folder: str | Path, image_size: int) -> Path:
    return ImageProcessor(size=image_size).save_pretrained(folder)


def random_hf_model(config: PaliGemmaConfig | str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """transformers' PaliGemmaForConditionalGeneration with random weights, norms and biases included (a zero
    norm weight or bias would hide a wrong formula). Matrices other than the (tied) embedding are drawn with std
    1/sqrt(fan_in) rather than transformers' 0.02: otherwise the input embedding dominates the residual stream and
    a small random model greedily repeats its last token, which would make generation tests pass too easily."""
    from transformers import PaliGemmaConfig as HFConfig
    from transformers import PaliGemmaForConditionalGeneration

    if isinstance(config, str):
        config = small_config(config)
    torch.manual_seed(seed)
    hf = PaliGemmaForConditionalGeneration(HFConfig.from_dict(config.to_hf_dict())).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
            elif p.dim() >= 2 and "embed_tokens" not in name:
                p.normal_(0.0, p[0].numel() ** -0.5)
    return hf.to(dtype)


def write_random_checkpoint(
    folder: str | Path,
    config: PaliGemmaConfig | str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layout: str = "transformers",
    max_shard_size: str | None = None,
    hf_model=None,
):
    """Write a complete checkpoint folder (weights, config.json, tokenizer.json, preprocessor_config.json).

    layout: "transformers" (as `save_pretrained` writes it), "hub" (the original Hub files' names,
    `vision_tower.vision_model.*`), or "in-memory" (`model.*` names plus an explicit tied `lm_head.weight`).
    Returns the transformers model, the reference for tests.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(config, str):
        config = small_config(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = hf_model if hf_model is not None else random_hf_model(config, seed, dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    hf.save_pretrained(folder, **kwargs)
    if layout != "transformers":
        _rename_keys(folder, layout)
    write_tokenizer(folder, loc_offset=config.image_token_id - 1152)
    write_preprocessor_config(folder, config.vision.image_size)
    return hf


def _renamed(key: str, layout: str) -> str:
    if layout == "hub":
        head = "vision_tower."
        return "vision_tower.vision_model." + key[len(head) :] if key.startswith(head) else key
    renames = (
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("language_model.model.", "model.language_model."),
    )
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _rename_keys(folder: Path, layout: str) -> None:
    index_path = folder / "model.safetensors.index.json"
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    weight_map = {}
    for name in files:
        tensors = {_renamed(k, layout): v for k, v in load_file(str(folder / name)).items()}
        if layout == "in-memory" and "model.language_model.embed_tokens.weight" in tensors:
            tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, name)
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index["weight_map"] = dict(sorted(weight_map.items()))
        index_path.write_text(json.dumps(index, indent=2))
