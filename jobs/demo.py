"""`make demo`: caption a real photograph with the single-image command.

Until the project bundles trained demo weights, this builds a tiny checkpoint with random weights (written by
transformers' save_pretrained, as a downloaded folder would be) and says so: the answer is noise, the point is
that the whole path from a checkpoint folder and an image file to text runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from model.__main__ import main as run_model
from model.random_checkpoint import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def photo(name: str = "astronaut.png") -> Path:
    """A real photograph shipped inside scikit-image (no download)."""
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def main(argv: list[str] | None = None) -> int:
    folder = ROOT / "demo_out" / "random-tiny"
    if not (folder / "config.json").is_file():
        write_random_checkpoint(folder, "tiny", seed=0)
    image = photo()
    print(f"checkpoint: {folder}  (RANDOM weights: the answer below is meaningless text)")
    print(f"image:      {image}")
    return run_model(["--checkpoint", str(folder), "--image", str(image), "--prompt", "caption en",
                      "--max-new-tokens", "16", *(argv or [])])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
