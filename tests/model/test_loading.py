"""Checkpoint loading: every bad checkpoint says which file and which key is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, PaliGemma
from model.loading import our_key

EMBED = "language_model.model.embed_tokens.weight"


@pytest.fixture
def tiny_copy(checkpoint, tmp_path) -> Path:
    """A private copy of the single-file tiny checkpoint that a test may break."""
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint("tiny")[0], folder)
    return folder


def rewrite_weights(folder: Path, change) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "break_it, names",
    [
        # a file is missing
        (lambda f: (f / "config.json").unlink(), ["config.json", "missing"]),
        (lambda f: (f / "tokenizer.json").unlink(), ["tokenizer.json", "missing"]),
        (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors", "missing"]),
        # unknown model types, at the top and in the text config
        (lambda f: edit_config(f, lambda c: c.update(model_type="llava")), ["config.json", "model_type", "llava"]),
        (
            lambda f: edit_config(f, lambda c: c["text_config"].update(model_type="llama")),
            ["config.json", "text_config.model_type", "llama"],
        ),
        # a RoPE variant we do not implement is refused rather than ignored
        (
            lambda f: edit_config(f, lambda c: c["text_config"].update(rope_parameters={"rope_type": "yarn"})),
            ["config.json", "rope_parameters", "yarn"],
        ),
        # a weight is missing, mis-shaped, or unknown
        (lambda f: rewrite_weights(f, lambda t: t.pop(EMBED)), ["ckpt", "language_model.embed_tokens.weight"]),
        (
            lambda f: rewrite_weights(f, lambda t: t.update({EMBED: t[EMBED][:-1]})),
            ["model.safetensors", EMBED, "shape"],
        ),
        (
            lambda f: rewrite_weights(f, lambda t: t.update({"language_model.model.extra.weight": torch.zeros(2)})),
            ["model.safetensors", "language_model.model.extra.weight", "unexpected"],
        ),
        # the config and the tokenizer disagree on the <image> id
        (lambda f: edit_config(f, lambda c: c.update(image_token_index=5)), ["config.json", "image_token_index"]),
        # a file that is not what its name says
        (lambda f: (f / "model.safetensors").write_bytes(b"not safetensors"), ["model.safetensors", "readable"]),
        (lambda f: (f / "config.json").write_text("{"), ["config.json", "JSON"]),
    ],
)
def test_bad_checkpoints_name_the_file_and_key(tiny_copy, break_it, names):
    break_it(tiny_copy)
    with pytest.raises(CheckpointError) as err:
        PaliGemma.from_pretrained(tiny_copy)
    for name in names:
        assert name in str(err.value)


def test_pickle_checkpoints_are_refused(tiny_copy):
    (tiny_copy / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, tiny_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*pickle"):
        PaliGemma.from_pretrained(tiny_copy)


def test_a_shard_listed_in_the_index_must_exist(checkpoint, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(checkpoint("tiny", sharded=True)[0], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=victim):
        PaliGemma.from_pretrained(folder)


def test_untied_head_is_loaded_when_the_config_unties_it(tiny_copy):
    edit_config(tiny_copy, lambda c: c.update(tie_word_embeddings=False))
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        PaliGemma.from_pretrained(tiny_copy)  # untied, but the file has no head
    head = torch.randn(1984, 64)
    rewrite_weights(tiny_copy, lambda t: t.update({"language_model.lm_head.weight": head}))
    model = PaliGemma.from_pretrained(tiny_copy)
    assert torch.equal(model.lm_head.weight, head)


@pytest.mark.parametrize("dtype", ["bf16", torch.float16, "float32"])
def test_dtype_and_device_are_applied_to_every_tensor(checkpoint, dtype):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0], dtype=dtype, device="cpu")
    want = {"bf16": torch.bfloat16, "float32": torch.float32}.get(dtype, dtype)
    assert {p.dtype for p in model.parameters()} == {want}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert not any(p.is_meta for p in model.parameters())


def test_unknown_dtype_is_refused(checkpoint):
    with pytest.raises(ValueError, match="unknown dtype"):
        PaliGemma.from_pretrained(checkpoint("tiny")[0], dtype="int3")


@pytest.mark.parametrize(
    "key, ours",
    [
        ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", "vision_tower.encoder.layers.0.mlp.fc1.weight"),
        ("model.vision_tower.embeddings.patch_embedding.weight", "vision_tower.embeddings.patch_embedding.weight"),
        ("language_model.model.norm.weight", "language_model.norm.weight"),
        ("model.language_model.layers.3.self_attn.q_proj.weight", "language_model.layers.3.self_attn.q_proj.weight"),
        ("model.multi_modal_projector.linear.bias", "multi_modal_projector.linear.bias"),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("vision_tower.head.probe", None),  # SigLIP's pooling head: unused by PaliGemma
    ],
)
def test_key_layouts_map_to_our_names(key, ours):
    assert our_key(key) == ours
