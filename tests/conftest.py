"""Shared fixtures: tiny random checkpoints written by transformers (the reference) and real photographs."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage
from PIL import Image

from testing.checkpoints import write_random_checkpoint

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(size, layout, sharded) -> (folder, transformers model). Written once per session."""
    written: dict[tuple, tuple[Path, object]] = {}

    def get(size: str = "tiny", layout: str = "transformers", sharded: bool = False):
        key = (size, layout, sharded)
        if key not in written:
            folder = tmp_path_factory.mktemp(f"{size}-{layout}-{'sharded' if sharded else 'single'}")
            hf = write_random_checkpoint(folder, size, layout=layout, max_shard_size="100KB" if sharded else None)
            written[key] = (folder, hf)
        return written[key]

    return get


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    data = Path(skimage.__file__).parent / "data"
    return [data / name for name in PHOTOS]


@pytest.fixture(scope="session")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in photo_paths]
