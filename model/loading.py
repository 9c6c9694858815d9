"""Read a Hugging Face PaliGemma checkpoint folder into our network, strictly.

Weights are only ever allocated once: the network is built on the meta device, each tensor is read from its
safetensors file straight into the target dtype and device, and the module takes the tensors as they are
(`assign=True`). Every key of the network must be found with the right shape, and every key of the files must be
known; each failure names the file and the key. Pickle-based formats (.bin, .pt) are refused: loading them can
run arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .config import CheckpointError, ModelConfigError, PaliGemmaConfig
from .image_processing import ImageProcessor
from .tokenizer import PromptTokenizer

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}  # fmt: skip

# Checkpoint key prefixes, in the order tried, and what they are called here. The Hub's original files use
# `vision_tower.vision_model.*` and `language_model.model.*`; transformers 5 writes `vision_tower.*`; its in-memory
# names (and some re-saved files) use `model.vision_tower.*`, `model.language_model.*` and a top-level `lm_head`.
KEY_PREFIXES = (
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("language_model.model.", "language_model."),
    ("model.language_model.", "language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
)
# SigLIP's attention-pooling head is saved with the tower but PaliGemma reads every patch, never the pooled vector.
UNUSED_PREFIXES = ("vision_tower.head.",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype asked for; None means float32 on a CPU and bfloat16 on a GPU (Gemma was trained in bfloat16)."""
    if dtype is None:
        return torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


FLOAT16_WARNING = (
    "float16 overflows in Gemma's activations (their range needs bfloat16's exponent; real checkpoints produce "
    "inf and NaN in float16): use bfloat16, or float32"
)


def our_key(key: str) -> str | None:
    """Our parameter name for a checkpoint key, or None for weights PaliGemma does not use."""
    for old, new in KEY_PREFIXES:
        if key.startswith(old):
            name = new + key[len(old) :]
            return None if name.startswith(UNUSED_PREFIXES) else name
    return key


def read_config(folder: Path) -> PaliGemmaConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    try:
        return PaliGemmaConfig.from_hf_dict(d, source=str(path))
    except ModelConfigError as e:
        raise CheckpointError(str(e)) from e


def weight_files(folder: Path) -> dict[str, list[str] | None]:
    """Each safetensors file with the keys it should hold (None: whatever it holds)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from e
        files: dict[str, list[str] | None] = {}
        for key, name in weight_map.items():
            files.setdefault(name, []).append(key)
        for name in files:
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder / name}: file is missing (listed in {index.name})")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return {single.name: None}
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if others:
        return dict.fromkeys(others)
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{folder / pickles[0]}: pickle-based checkpoints are refused (loading them can run code); "
            "convert the weights to safetensors"
        )
    raise CheckpointError(f"{single}: file is missing (no *.safetensors weights in {folder})")


def load_state(
    folder: Path,
    expected: dict[str, torch.Size],
    dtype: torch.dtype,
    device,
    optional: frozenset[str] = frozenset(),
    read: bool = True,
) -> dict[str, torch.Tensor]:
    """Every expected tensor, read into `dtype` on `device`; keys in `optional` may be absent. With read=False
    only the files' headers are checked (keys, shapes, sizes) and the tensors are left on disk."""
    state: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}
    for name, listed in weight_files(folder).items():
        path = folder / name
        check_file_size(path)
        try:
            f = safe_open(str(path), framework="pt", device=str(device))
        except Exception as e:  # safetensors raises its own error types for truncated or foreign files
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        with f:
            present = set(f.keys())
            for key in listed or sorted(present):
                if key not in present:
                    raise CheckpointError(f"{path}: key {key!r} is listed in the index but not in the file")
                ours = our_key(key)
                if ours is None:
                    continue
                if ours not in expected:
                    raise CheckpointError(f"{path}: unexpected key {key!r} (not a PaliGemma weight)")
                if ours in state:
                    raise CheckpointError(f"{path}: key {key!r} duplicates {ours!r} already read from {where[ours]}")
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[ours]):
                    raise CheckpointError(
                        f"{path}: key {key!r} has shape {list(shape)} but config.json implies {list(expected[ours])}"
                    )
                state[ours] = f.get_tensor(key).to(dtype) if read else torch.empty(0)
                where[ours] = name
    missing = sorted(set(expected) - set(state) - optional)
    if missing:
        raise CheckpointError(f"{folder}: key {missing[0]!r} is missing from the weights ({len(missing)} missing)")
    return state


def check_file_size(path: Path) -> None:
    """A safetensors file whose data ends before its header says (a truncated download or copy) is refused here,
    from its header alone, instead of failing later while a tensor is read."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a readable safetensors file ({size} bytes, no header)")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (its first bytes announce a {length}-byte header but the "
                f"file has {size} bytes: truncated, or not safetensors)"
            )
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (bad header: {e})") from e
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise CheckpointError(
            f"{path}: truncated: the header describes {8 + length + end} bytes but the file has {size}"
        )


def _prepare(folder: Path, network: type) -> tuple:
    """Config, tokenizer, image processor, a meta-device network and the shapes its weights must have."""
    config = read_config(folder)
    tokenizer = PromptTokenizer.from_file(folder / "tokenizer.json")
    if tokenizer.image_id != config.image_token_id:
        raise CheckpointError(
            f"{folder / 'config.json'}: key 'image_token_index' is {config.image_token_id} but tokenizer.json "
            f"gives <image> the id {tokenizer.image_id}"
        )
    processor = ImageProcessor.from_pretrained(folder, config.vision.image_size)
    with torch.device("meta"):
        model = network(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    optional: frozenset[str] = frozenset()
    if config.tie_word_embeddings:
        # Tied checkpoints may still carry a copy of the embedding as lm_head: accept it, then use the embedding.
        expected["lm_head.weight"] = torch.Size((config.text.vocab_size, config.text.hidden_size))
        optional = frozenset({"lm_head.weight"})
    return config, tokenizer, processor, model, expected, optional


def check_checkpoint(path: str | Path, network: type) -> PaliGemmaConfig:
    """Everything `load_pretrained` checks, without reading a tensor: config.json, tokenizer.json, the
    preprocessor config and every weights file's header (keys, shapes, and that no file is truncated)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    config, _, _, _, expected, optional = _prepare(folder, network)
    load_state(folder, expected, torch.float32, "cpu", optional, read=False)
    return config


def load_pretrained(network: type, path: str | Path, dtype=None, device=None):
    """A `network` (the PaliGemma class, handed in by its from_pretrained) with the folder's weights."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = resolve_dtype(dtype, device)
    if dtype == torch.float16:
        import warnings

        warnings.warn(FLOAT16_WARNING, stacklevel=3)
    config, tokenizer, processor, model, expected, optional = _prepare(folder, network)
    state = load_state(folder, expected, dtype, device, optional)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, assign=True, strict=True)
    model.tokenizer, model.image_processor = tokenizer, processor
    return model.eval()
