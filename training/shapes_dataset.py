"""Write shapes data to disk: training sets as (image, prefix, suffix) JSONL, and held-out benchmark sets.

A benchmark set is a folder that the label job and the evaluations read without knowing it is synthetic:

    images/00000.png ...          scenes, then OCR word images
    annotations.json              COCO ground truth of the scenes (categories circle, square, triangle)
    manifest.parquet              one row per (image, prompt) with the expected `answer` (jobs.label --manifest)

Prompts: `detect circle ; square ; triangle` and `caption en` for every scene, `segment <class>` for every class
present, one counting question per scene (any class, so zero is a possible answer), and `ocr` for each word image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .shapes import CLASSES, caption_text, count_question, draw_scene, draw_word, example_stream

CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
DETECT_ALL = "detect " + " ; ".join(CLASSES)


def _rle(mask: np.ndarray) -> dict:
    from decoders.masks import mask_to_rle

    return mask_to_rle(mask)


def shape_annotation(ann_id: int, image_id: int, kind: str, box, area: int, segmentation: dict,
                     color: str | None = None) -> dict:  # fmt: skip
    """One object of a shapes set as a COCO annotation (box [x0, y0, x1, y1] in pixels, right and bottom
    exclusive; the category ids of CATEGORIES), the one form every shapes set writer uses."""
    x0, y0, x1, y1 = box
    out = {"id": ann_id, "image_id": image_id, "category_id": CLASSES.index(kind) + 1,
           "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area, "segmentation": segmentation, "iscrowd": 0}  # fmt: skip
    return out | ({"color": color} if color is not None else {})


def write_benchmark_set(folder: str | Path, num_scenes: int, num_words: int, seed: int, scene=draw_scene,
                        word=draw_word) -> dict[str, int]:  # fmt: skip
    """Draw the set with `default_rng(seed)` and write it; returns how many images and prompts it holds.

    scene, word: the drawing routines, `rng -> (image, objects)` and `rng -> (image, text)`; objects need `kind`,
    `color`, `box` and `mask`. The training generator's by default; another generator of the spec
    (testing/other_shapes.py) gives a set that every skill is scored on the same way.
    """
    import pandas as pd

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations, rows = [], [], []
    for i in range(num_scenes + num_words):
        image_id, name = i + 1, f"images/{i:05d}.png"
        if i < num_scenes:
            image, shapes = scene(rng)
            prompts = {DETECT_ALL: "", "caption en": caption_text(shapes)}
            for kind in sorted({s.kind for s in shapes}):
                prompts[f"segment {kind}"] = ""
            kind = CLASSES[int(rng.integers(len(CLASSES)))]
            prompts[count_question(kind)] = str(sum(s.kind == kind for s in shapes))
            for s in shapes:
                annotations.append(shape_annotation(len(annotations) + 1, image_id, s.kind, s.box, int(s.mask.sum()),
                                                    _rle(s.mask), s.color))  # fmt: skip
        else:
            image, text = word(rng)
            prompts = {"ocr": text}
        image.save(folder / name)
        images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        rows += [{"image_id": image_id, "path": name, "prompt": p, "answer": a} for p, a in prompts.items()]
    coco = {"images": images[:num_scenes], "annotations": annotations, "categories": CATEGORIES}
    (folder / "annotations.json").write_text(json.dumps(coco))
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet", index=False)
    return {"images": len(images), "prompts": len(rows)}


def write_training_jsonl(
    folder: str | Path, num_examples: int, seed: int, vae: str | None = None, mix: dict[str, float] | None = None
) -> Path:
    """`num_examples` examples of the training stream as images/ + train.jsonl (the format jobs.finetune reads)."""
    from decoders.vqvae import MaskEncoder

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    encoder = MaskEncoder.from_npz(vae) if vae else None
    stream = example_stream(seed, encoder, mix)
    path = folder / "train.jsonl"
    with path.open("w") as f:
        for i in range(num_examples):
            ex = next(stream)
            name = f"images/{i:06d}.png"
            ex.image.save(folder / name)
            f.write(json.dumps({"image": name, "prefix": ex.prefix, "suffix": ex.suffix, "task": ex.task}) + "\n")
    return path
