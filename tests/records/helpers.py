"""What the record tests share: a small shapes dataset as ground truth, and the records read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from decoders import MaskDecoder, mask_to_rle, parse_objects, paste_mask, rle_to_mask

ROOT = Path(__file__).resolve().parents[2]
VAE = ROOT / "checkpoints" / "paligemma-shapes" / "vae.npz"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def one_bin(width: int, height: int) -> np.ndarray:
    """The size of one <loc> bin in pixels, per box coordinate (x0, y0, x1, y1)."""
    return np.array([width, height, width, height]) / 1023


def decoded(record: dict, decoder: MaskDecoder | None = None) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(label, box, mask) of every object of a record's answer, read back by the parser (and the VAE)."""
    w, h = record["width"], record["height"]
    out = []
    for o in parse_objects(record["suffix"], w, h):
        mask = None
        if o.seg_tokens is not None and decoder is not None:
            mask = paste_mask(decoder.decode([list(o.seg_tokens)])[0], o.box, h, w)
        out.append((o.label, np.array(o.box), mask))
    return out


def scene_rows(folder: Path, seed: int, count: int, score: float, model: str, num_objects: int | None = None):
    """`count` shapes scenes saved as folder/scene{i}.png, as the `segment` rows a label run would write with
    their true boxes and masks; returns (rows, the shapes of each scene by file stem)."""
    from training.shapes import draw_scene

    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(count):
        image, shapes = draw_scene(rng, num_objects=num_objects)
        path = folder / f"scene{i}.png"
        image.save(path)
        objects = [{"label": s.kind, "box": [float(v) for v in s.box], "score": score, "mask": mask_to_rle(s.mask)}
                   for s in shapes]  # fmt: skip
        rows.append({"image_id": i + 1, "path": str(path), "width": 224, "height": 224, "task": "segment",
                     "prompt": "segment circle ; square ; triangle", "text": "", "objects": objects, "error": None,
                     "model": model, "seconds": 0.0})  # fmt: skip
        truth[f"scene{i}"] = shapes
    return rows, truth


def gt_objects(
    coco: dict, image_id: int, ids: set[int] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(label, box, mask or None) of the image's annotations (those in `ids` only, when given)."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out = []
    for a in coco["annotations"]:
        if a["image_id"] == image_id and not a.get("iscrowd") and (ids is None or a["id"] in ids):
            x, y, w, h = a["bbox"]
            seg = a.get("segmentation")
            mask = rle_to_mask(seg) if isinstance(seg, dict) and isinstance(seg.get("counts"), str) else None
            out.append((names[a["category_id"]], np.array([x, y, x + w, y + h]), mask))
    return out
