"""Validation while training on the user's own data: label the validation records with the label job's code and
score them with `evals`.

The set is a records file (what jobs.make_records writes: .jsonl or .parquet) or a COCO instances file. Each
record is labeled by `labeling.answers.label_batch` (what the label job's replicas run, so a validation score is
what `jobs.label` would get) and scored by what its prompt asks:

- detect / segment: COCO AP and AP50 (`evals.coco.evaluate`), boxes (`detect_*`) and, where the ground truth has
  masks, masks (`segment_*`). Each record counts as one COCO image, so per-class prompts of one picture are
  scored against their own answers. Ground truth: the record's `objects` (exact boxes and masks, as make_records
  writes them), else its answer parsed back (boxes within a `<loc>` bin; masks decoded by the VAE); for a COCO
  file, the file's own boxes and masks.
- caption / describe: CIDEr-D (`caption_cider`) and exact match; ocr: exact match; answer: ANLS and exact match;
  any other prompt: exact match of the text (`exact`).

Default `--best-metric` per task, in this order of precedence when a set mixes tasks: segment_ap50 (segment),
detect_ap50 (detect), caption_cider, ocr_exact, answer_anls, exact.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tasks import CLASS_TASKS, TASKS

DEFAULT_METRICS = (("segment", "segment_ap50"), ("detect", "detect_ap50"), ("caption", "caption_cider"),
                   ("describe", "caption_cider"), ("ocr", "ocr_exact"), ("answer", "answer_anls"))  # fmt: skip


@dataclass
class ValRecord:
    """One validation prompt: its image (path, opened when labeled), prompt, reference answer and ground truth."""

    image: str
    prefix: str
    suffix: str
    width: int
    height: int
    objects: list[dict] | None = None  # [{label, box, mask RLE or None}]


@dataclass
class ValSet:
    records: list[ValRecord]
    base: Path
    kinds: list[str] = field(default_factory=list)

    def default_metric(self) -> str:
        for kind, metric in DEFAULT_METRICS:
            if kind in self.kinds:
                return metric
        return "exact"


def _kind(prefix: str) -> str:
    from tasks import from_prompt

    return from_prompt(prefix).name


def load_val_set(path: str | Path, images: str | None = None, limit: int | None = None, vae: str | None = None):
    """The validation set of a records file or a COCO file (detect prompts; segment prompts too when a VAE is
    given and the file has masks)."""
    path = Path(path)
    if path.suffix == ".json":
        records = _coco_records(path, images, vae)
        base = Path("/")
    else:
        from .data import read_records

        rows = read_records(path)
        records = [ValRecord(str(r["image"]), r["prefix"], r["suffix"], int(r.get("width") or 0),
                             int(r.get("height") or 0), r.get("objects")) for r in rows]  # fmt: skip
        base = path.parent
    records = records[:limit] if limit else records
    return ValSet(records, base, sorted({_kind(r.prefix) for r in records}))


def _coco_records(path: Path, images: str | None, vae: str | None) -> list[ValRecord]:
    from decoders import mask_to_rle
    from records import Problems
    from records.coco import coco_items

    items = coco_items(path, images, Problems(), masks=vae is not None)
    import json

    names = [c["name"] for c in sorted(json.loads(path.read_text())["categories"], key=lambda c: int(c["id"]))]
    out = []
    for it in items:
        masks = vae is not None and any(o.mask is not None for o in it.objects)
        for task in (t for t in CLASS_TASKS if masks or not TASKS[t].decodes_masks):
            objects = [{"label": o.label, "box": list(o.box),
                        "mask": mask_to_rle(o.mask) if TASKS[task].decodes_masks and o.mask is not None else None}
                       for o in it.objects]  # fmt: skip
            out.append(ValRecord(str(Path(it.image).absolute()), f"{task} " + " ; ".join(names), "", it.width,
                                 it.height, objects))  # fmt: skip
    return out


def _ground_truth(records: list[ValRecord], sizes: list[tuple[int, int]], mask_decoder) -> dict:
    """A COCO instances dict: one image per record, one category per class named in the prompts."""
    from decoders import mask_to_rle, parse_objects, paste_mask
    from rows import label_key
    from tasks import from_prompt

    names: dict[str, int] = {}
    images, annotations = [], []
    for i, (r, (w, h)) in enumerate(zip(records, sizes, strict=True)):
        classes = getattr(from_prompt(r.prefix), "classes", None) or [""]
        for c in classes:
            names.setdefault(label_key(c), len(names) + 1)
        images.append({"id": i + 1, "width": w, "height": h, "file_name": r.image})
        if r.objects is not None:
            objects = [(o["label"], o["box"], o.get("mask")) for o in r.objects]
        else:
            objects = []
            for o in parse_objects(r.suffix, w, h):
                mask = None
                if o.seg_tokens is not None and mask_decoder is not None:
                    mask = mask_to_rle(paste_mask(mask_decoder.decode([list(o.seg_tokens)])[0], o.box, h, w))
                objects.append((o.label, list(o.box), mask))
        for label, box, mask in objects:
            key = label_key(label) if classes != [""] else ""
            if key not in names:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": names[key], "iscrowd": 0,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}  # fmt: skip
            if mask is not None:
                ann["segmentation"] = mask
            annotations.append(ann)
    categories = [{"id": cid, "name": name} for name, cid in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _label(model, vset: ValSet, mask_decoder, batch_size: int, max_new_tokens: int):
    from PIL import Image

    from labeling.answers import label_batch
    from tasks import from_prompt

    from .data import _open_image

    rows, sizes = [None] * len(vset.records), [(0, 0)] * len(vset.records)
    # Rows of one prompt kind together: answers of similar length share a batch.
    order = sorted(range(len(vset.records)), key=lambda i: (vset.records[i].prefix, i))
    cache: dict[str, Image.Image] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        images = []
        for i in chunk:
            r = vset.records[i]
            if r.image not in cache:
                cache = {r.image: _open_image(r.image, vset.base, r.image)} | (cache if len(cache) < 64 else {})
            images.append(cache[r.image])
        labeled = label_batch(model, [from_prompt(vset.records[i].prefix) for i in chunk], images,
                              image_ids=[i + 1 for i in chunk], mask_decoder=mask_decoder,
                              max_new_tokens=max_new_tokens)  # fmt: skip
        for i, image, item in zip(chunk, images, labeled, strict=True):
            rows[i], sizes[i] = item.row, image.size
    return rows, sizes


@torch.no_grad()
def evaluate_val(model, vset: ValSet, mask_decoder=None, batch_size: int = 16, max_new_tokens: int = 128) -> dict:
    """Label every record with `model` and score it; returns {metric: value} (see the module docstring)."""
    was_training = model.training
    model.eval()
    try:
        rows, sizes = _label(model, vset, mask_decoder, batch_size, max_new_tokens)
    finally:
        model.train(was_training)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(vset.records):
        by_kind[_kind(r.prefix)].append(i)
    scores: dict[str, float] = {}
    objects = [i for k in CLASS_TASKS for i in by_kind.get(k, [])]
    if objects:
        scores |= _object_scores(vset, rows, sizes, objects, mask_decoder)
    for kind, idx in by_kind.items():
        if kind not in CLASS_TASKS:
            scores |= _text_scores(kind, [rows[i]["text"] for i in idx], [vset.records[i].suffix for i in idx])
    return scores


def _object_scores(vset: ValSet, rows, sizes, idx: list[int], mask_decoder) -> dict[str, float]:
    from evals.coco import evaluate
    from rows import rows_to_coco_results
    from tasks import from_prompt

    records = [vset.records[i] for i in idx]
    gt = _ground_truth(records, [sizes[i] for i in idx], mask_decoder)
    chosen = []
    for n, i in enumerate(idx):
        row = dict(rows[i]) | {"image_id": n + 1}
        if not getattr(from_prompt(records[n].prefix), "classes", None):  # a referring expression: one category
            row["objects"] = [o | {"label": ""} for o in row["objects"] or []]
        chosen.append(row)
    results, _ = rows_to_coco_results(chosen, gt["categories"])
    scores = {}
    box = evaluate(gt, results, "bbox")
    scores |= {"detect_ap50": box["AP50"], "detect_ap": box["AP"]}
    if any("segmentation" in a for a in gt["annotations"]):
        with_masks = [r for r in results if r.get("segmentation")]
        seg = evaluate(gt | {"annotations": [a for a in gt["annotations"] if "segmentation" in a]}, with_masks, "segm")
        scores |= {"segment_ap50": seg["AP50"], "segment_ap": seg["AP"]}
    return {k: max(0.0, float(v)) for k, v in scores.items()}  # COCO's -1 (no ground truth) counts as 0


def _text_scores(kind: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    from evals.anls import anls
    from evals.cider import cider_d
    from evals.vqa import exact_match

    exact = float(np.mean([exact_match(p, [r]) for p, r in zip(predictions, references, strict=True)]))
    if kind in ("caption", "describe"):
        cider = cider_d(dict(enumerate(predictions)), {i: [r] for i, r in enumerate(references)}).score
        return {"caption_cider": cider, "caption_exact": exact}
    if kind == "answer":
        return {"answer_anls": anls(predictions, [[r] for r in references]), "answer_exact": exact}
    if kind == "ocr":
        return {"ocr_exact": float(np.mean([p.strip() == r.strip() for p, r in zip(predictions, references,
                                                                                     strict=True)]))}  # fmt: skip
    return {"exact": exact}
