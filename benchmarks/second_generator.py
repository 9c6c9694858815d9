"""Every skill on drawings of another generator: the shapes spec drawn by `testing/other_shapes.py` (code written
apart from the training generator), as the same kind of held-out set `jobs.benchmark --shapes` scores.

    python -m benchmarks.second_generator [--scenes 200] [--words 200] [--seed 777] [--checkpoint DIR]
                                          [--vae FILE] --output /abs/DIR

A model that learned the shapes and the letters scores here about as well as on its training drawings; one that
learned one drawing routine does not. Writes the scenes and words with their COCO ground truth and expected
answers under OUTPUT/shapes-data, labels and scores them with the benchmark job (detection AP50, segmentation
mIoU, counting, OCR and caption exact match), prints its lines and leaves its metrics.json in OUTPUT, marked
with the generator that drew the set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = "testing/other_shapes.py"


def write_set(folder: Path, scenes: int, words: int, seed: int) -> dict[str, int]:
    """The held-out set of the second generator in `folder`, laid out as training/shapes_dataset.py writes one."""
    from testing.other_shapes import scene, word
    from training.shapes_dataset import write_benchmark_set

    return write_benchmark_set(folder, scenes, words, seed, scene=scene, word=word)


def main(argv: list[str] | None = None) -> int:
    """Write the set, then label and score it with the benchmark job."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--words", type=int, default=None, help="word images (default: as many as --scenes)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "paligemma-shapes"))
    p.add_argument("--vae", default=None, help="the mask decoder (default: the checkpoint's vae.npz)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output", required=True, help="an absolute folder: the set and the benchmark's output")
    args = p.parse_args(argv)
    if args.scenes < 1 or (args.words is not None and args.words < 0):
        p.error("--scenes needs at least 1 scene and --words at least 0")
    out = Path(args.output)
    data = out / "shapes-data"
    if not (data / "manifest.parquet").is_file():
        counts = write_set(data, args.scenes, args.scenes if args.words is None else args.words, args.seed)
        print(f"wrote {counts['images']} images and {counts['prompts']} prompts of {GENERATOR} to {data}")
    vae = args.vae or str(Path(args.checkpoint) / "vae.npz")
    from jobs.benchmark import main as benchmark

    # The benchmark draws its set only where OUTPUT/shapes-data holds none, so it scores the one written above.
    status = benchmark(["--checkpoint", args.checkpoint, "--shapes", str(args.scenes), "--shapes-seed", str(args.seed),
                        "--vae", vae, "--max-new-tokens", "128", "--batch-size", str(args.batch_size),
                        "--output", str(out)])  # fmt: skip
    metrics = out / "metrics.json"
    if metrics.is_file():
        metrics.write_text(json.dumps({"generator": GENERATOR} | json.loads(metrics.read_text()), indent=2))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
