"""Random COCO ground truth and detections, for the parity tests and the timing benchmark (benchmarks/coco.py).

The data is built to reach the corners of COCOeval that real data reaches and toy data usually does not:
crowd regions (which absorb detections without counting as misses), images with no annotations, categories
that have ground truth but no detections (and the reverse), all three area ranges, more detections than
`maxDets`, and tied scores (pycocotools sorts with a stable sort, so ties must keep input order).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def _box_in(rng: np.random.Generator, w: int, h: int) -> list[float]:
    """A random [x, y, w, h] box inside a w×h image, with sizes spread over the small/medium/large ranges."""
    side = float(np.exp(rng.uniform(np.log(4), np.log(min(w, h)))))
    bw = max(2.0, side * rng.uniform(0.6, 1.4))
    bh = max(2.0, side * rng.uniform(0.6, 1.4))
    bw, bh = min(bw, w - 1.0), min(bh, h - 1.0)
    x = rng.uniform(0, w - bw)
    y = rng.uniform(0, h - bh)
    return [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]


def _polygon(box: list[float], rng: np.random.Generator) -> list[list[float]]:
    """An octagon-ish polygon inscribed in a box, so a mask differs from its box."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    xs = cx + np.cos(angles) * w / 2 * rng.uniform(0.7, 1.0, 8)
    ys = cy + np.sin(angles) * h / 2 * rng.uniform(0.7, 1.0, 8)
    return [np.stack([xs, ys], 1).round(2).ravel().tolist()]


def _jitter(box: list[float], rng: np.random.Generator, w: int, h: int, scale: float) -> list[float]:
    x, y, bw, bh = box
    x0 = float(np.clip(x + rng.normal(0, scale * bw), 0, w - 1))
    y0 = float(np.clip(y + rng.normal(0, scale * bh), 0, h - 1))
    x1 = float(np.clip(x + bw + rng.normal(0, scale * bw), x0 + 1, w))
    y1 = float(np.clip(y + bh + rng.normal(0, scale * bh), y0 + 1, h))
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def random_coco(
    n_images: int,
    objects_per_image: int,
    *,
    n_categories: int = 8,
    seed: int = 0,
    masks: bool = True,
    image_size: tuple[int, int] = (96, 400),
) -> tuple[dict, list[dict]]:
    """(ground-truth dataset dict, detection results list) drawn at random.

    About 10% of images have no ground truth, about 5% of annotations are crowd regions (RLE, as in COCO), the
    last category has ground truth but never a detection, and about 20% of scores are rounded to 0.1 to make ties.
    With `masks`, ground truth carries polygons (crowd: uncompressed RLE) with `area` = mask area, and detections
    carry compressed RLE masks; without, ground truth areas are box areas and detections carry boxes only.
    """
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, n_categories + 1)]
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        w, h = (int(v) for v in rng.integers(image_size[0], image_size[1], 2))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:06d}.jpg"})
        n_gt = 0 if rng.random() < 0.1 else int(rng.integers(1, 2 * objects_per_image))
        for _ in range(n_gt):
            box = _box_in(rng, w, h)
            crowd = int(rng.random() < 0.05)
            category = int(rng.integers(1, n_categories + 1))
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": crowd}
            ann["bbox"] = box
            if masks:
                poly = _polygon(box, rng)
                rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
                ann["area"] = float(mask_utils.area(rle))
                if crowd:
                    m = mask_utils.decode(rle)
                    ann["segmentation"] = _uncompressed_rle(m)
                else:
                    ann["segmentation"] = poly
            else:
                ann["area"] = box[2] * box[3]
                ann["segmentation"] = []
            annotations.append(ann)
            # Detections: usually a jittered copy, sometimes a wrong label, sometimes missed.
            if ann["category_id"] != n_categories and rng.random() < 0.85:
                cat = ann["category_id"] if rng.random() < 0.9 else int(rng.integers(1, n_categories))
                results.append(_detection(rng, image_id, cat, _jitter(box, rng, w, h, 0.08), w, h, masks))
        # False positives, sometimes many (past maxDets=100 when objects_per_image is large).
        for _ in range(int(rng.poisson(objects_per_image * 0.5))):
            cat = int(rng.integers(1, n_categories))
            results.append(_detection(rng, image_id, cat, _box_in(rng, w, h), w, h, masks))
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    return dataset, results


def _detection(rng, image_id: int, cat: int, box: list[float], w: int, h: int, masks: bool) -> dict:
    score = float(rng.random())
    if rng.random() < 0.2:
        score = round(score, 1)
    det = {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}
    if masks:
        rle = mask_utils.merge(mask_utils.frPyObjects(_polygon(box, rng), h, w))
        det["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    return det


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths starting with zeros), as crowd annotations use."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}
