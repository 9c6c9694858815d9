"""Tiled labeling against squashing, without Ray: does cutting a large image into tiles find its small objects?

    python -m benchmarks.tiling [--scenes 20] [--size 896] [--tile SIZE] [--tile-overlap 0.2] [--tile-full-image]

Draws held-out scenes of 10-30 small shapes (training/large_scenes.py), labels every (image, prompt) of the set
with `labeling.label_batch` twice, (a) squashed: the whole image as one pair, as the label job sends it today, and
(b) tiled: the image cut into tiles (labeling.tiles: the grid, the cut, the merge), each tile its own pair, and
scores both with `evals.shapes.shapes_scores` (detection AP50, segmentation mIoU). Prints a table with images/s
and tiles/s (model time and cut/merge time apart). The tile size defaults to the model's own resolution, so the
same command measures a checkpoint trained at 448 px.

Target (issue 20): tiled AP50 >= 0.5 and at least 3x the squashed one; the same for mIoU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEFAULT_CHECKPOINT = "checkpoints/paligemma-shapes"


@dataclass(frozen=True)
class Run:
    """One way of labeling the set: its rows and what it cost."""

    mode: str
    rows: list[dict]
    pairs: int
    images: int
    model_seconds: float
    tiling_seconds: float  # cutting and merging (0 when squashed)


def label_pairs(model, mask_decoder, pairs: list[dict], batch_size: int, max_new_tokens: int) -> list[dict]:
    """pairs of {task, image, size, key} -> the rows label_batch makes of them, in order; a batch holds pairs of
    one prompt kind, so that answers of similar length share it."""
    from labeling import label_batch

    order = sorted(range(len(pairs)), key=lambda i: (pairs[i]["task"].name, i))
    out: list[dict | None] = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        labeled = label_batch(
            model,
            [pairs[i]["task"] for i in chunk],
            [pairs[i]["image"] for i in chunk],
            image_ids=[pairs[i]["image_id"] for i in chunk],
            sizes=[pairs[i]["size"] for i in chunk],
            mask_decoder=mask_decoder,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        for i, item in zip(chunk, labeled, strict=True):
            out[i] = item.row
    return out  # type: ignore[return-value]


def run_squashed(model, decoder, manifest, images, args) -> Run:
    from tasks import from_prompt

    pairs = [{"task": from_prompt(m["prompt"]), "image": images[m["path"]], "image_id": m["image_id"],
              "size": images[m["path"]].size} for m in manifest]  # fmt: skip
    start = time.perf_counter()
    rows = label_pairs(model, decoder, pairs, args.batch_size, args.max_new_tokens)
    seconds = time.perf_counter() - start
    for row, m in zip(rows, manifest, strict=True):
        row["path"] = m["path"]
    return Run("squashed", rows, len(pairs), len(images), seconds, 0.0)


def run_tiled(model, decoder, manifest, images, args, size: int) -> Run:
    """Every (image, prompt) as tile pairs; each tile's objects placed in the tile's own pixels, then merged."""
    from labeling.tiles import TileConfig, cut_tiles
    from tasks import from_prompt

    config = TileConfig(tile=args.tile or size, overlap=args.tile_overlap, full_image=args.tile_full_image,
                        merge=args.tile_merge)  # fmt: skip
    start = time.perf_counter()
    tiles = {}
    for path, image in images.items():
        boxes = config.boxes(*image.size)
        tiles[path] = (boxes, cut_tiles(np.asarray(image), boxes, size))
    pairs = []
    for n, m in enumerate(manifest):
        task = from_prompt(m["prompt"])
        for box, pixels in zip(*tiles[m["path"]], strict=True):
            pairs.append({"task": task, "image": pixels, "image_id": m["image_id"], "size": (box[2] - box[0],
                          box[3] - box[1]), "box": box, "row": n})  # fmt: skip
    cut_seconds = time.perf_counter() - start
    start = time.perf_counter()
    tile_rows = label_pairs(model, decoder, pairs, args.batch_size, args.max_new_tokens)
    model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    by_row = defaultdict(list)
    for pair, row in zip(pairs, tile_rows, strict=True):
        by_row[pair["row"]].append((pair["box"], row))
    rows = [_merged_row(m, images[m["path"]].size, by_row[n], config) for n, m in enumerate(manifest)]
    merge_seconds = time.perf_counter() - start
    return Run("tiled", rows, len(pairs), len(images), model_seconds, cut_seconds + merge_seconds)


def _merged_row(m: dict, size: tuple[int, int], parts: list, config) -> dict:
    """One row per (image, prompt) from its tiles' rows: objects merged, the tiles' texts kept, the first tile
    error named."""
    from labeling.tiles import TileObjects, merge_tiles

    errors = [f"tile {box}: {row['error']}" for box, row in parts if row["error"]]
    objects = [] if errors else merge_tiles([TileObjects(box, row["objects"]) for box, row in parts], *size, config)
    return {"image_id": m["image_id"], "path": m["path"], "width": size[0], "height": size[1], "prompt": m["prompt"],
            "text": "", "tile_texts": [row["text"] for _, row in parts], "tiles": len(parts), "objects": objects,
            "error": errors[0] if errors else None}  # fmt: skip


def score(run: Run, manifest, folder: Path) -> dict:
    from evals.shapes import shapes_scores

    s = shapes_scores(run.rows, manifest, folder / "annotations.json")
    seconds = run.model_seconds + run.tiling_seconds
    return {
        "mode": run.mode,
        "pairs": run.pairs,
        "images": run.images,
        "model_s": round(run.model_seconds, 2),
        "tiling_s": round(run.tiling_seconds, 2),
        "images_per_s": run.images / seconds,
        "pairs_per_s": run.pairs / run.model_seconds,
        "AP50": s["detection"]["AP50"],
        "AP": s["detection"]["AP"],
        "mIoU": s["segmentation"]["mIoU"],
        "segm_AP50": s["segmentation"]["coco_segm"]["AP50"],
        "errors": s["errors"],
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--vae", default=None, help="mask decoder npz (default: CHECKPOINT/vae.npz)")
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--size", type=int, default=896, help="scene side in pixels")
    p.add_argument("--seed", type=int, default=20_020, help="the set's seed (no training stream uses it)")
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the model's resolution)")
    p.add_argument("--tile-overlap", type=float, default=0.2)
    p.add_argument("--tile-full-image", action="store_true")
    p.add_argument("--tile-merge", choices=("nmm", "nms"), default="nmm")
    p.add_argument("--modes", default="squashed,tiled")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, help="folder for the set (default: a temporary one)")
    p.add_argument("--json", default=None, help="write the results here too")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks.common import device_name
    from decoders import MaskDecoder
    from model import PaliGemma
    from tasks import from_prompt
    from training.large_scenes import write_large_benchmark_set

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        counts = write_large_benchmark_set(folder, args.scenes, args.seed, args.size)
        import pandas as pd

        manifest = pd.read_parquet(folder / "manifest.parquet").to_dict("records")
        images = {m["path"]: Image.open(folder / m["path"]).convert("RGB") for m in manifest}
        model = PaliGemma.from_pretrained(args.checkpoint, device=args.device)
        decoder = MaskDecoder.from_npz(args.vae or Path(args.checkpoint) / "vae.npz", device=args.device)
        size = model.config.vision.image_size
        first = manifest[0]
        warm = [{"task": from_prompt(first["prompt"]), "image": images[first["path"]], "image_id": 0,
                 "size": (args.size, args.size)}]  # fmt: skip
        label_pairs(model, decoder, warm, 1, 8)  # warm-up, not timed
        runs = {"squashed": lambda: run_squashed(model, decoder, manifest, images, args),
                "tiled": lambda: run_tiled(model, decoder, manifest, images, args, size)}  # fmt: skip
        results = [score(runs[mode](), manifest, folder) for mode in args.modes.split(",")]
    header = {"checkpoint": args.checkpoint, "model_px": size, "set": counts, "scene_px": args.size,
              "tile": args.tile or size, "overlap": args.tile_overlap, "full_image": args.tile_full_image,
              "merge": args.tile_merge, "device": device_name(torch.device(args.device)),
              "batch_size": args.batch_size}  # fmt: skip
    print_table(header, results)
    out = {"setup": header, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def print_table(header: dict, results: list[dict]) -> None:
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    cols = ["mode", "pairs", "model_s", "tiling_s", "images_per_s", "pairs_per_s", "AP50", "AP", "mIoU", "segm_AP50"]
    print(" | ".join(f"{c:>12}" for c in cols))
    for r in results:
        print(" | ".join(f"{r[c]:>12.3f}" if isinstance(r[c], float) else f"{r[c]:>12}" for c in cols))
    by = {r["mode"]: r for r in results}
    if {"squashed", "tiled"} <= set(by):
        for metric in ("AP50", "mIoU"):
            t, s = by["tiled"][metric], by["squashed"][metric]
            ok = t >= 0.5 and t >= 3 * s
            print(f"target {metric}: tiled {t:.3f} >= 0.5 and >= 3 x squashed {s:.3f}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
