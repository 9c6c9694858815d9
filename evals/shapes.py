"""Scores of the synthetic shapes benchmark (training/shapes_dataset.py) from the label job's rows.

One number per skill, each defined so that a perfect model scores 1:

- detection: the 12 COCO box stats of the `detect circle ; square ; triangle` rows (AP50 is the headline);
- segmentation: mIoU over `segment <class>` rows of the union of predicted masks against the union of that
  class's ground-truth masks (a row without masks scores 0), plus the COCO mask stats of those rows;
- counting, caption: exact match of the answer text with the expected one;
- OCR: exact match (and CER) of the read word.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rows import rows_to_coco_results
from rows.text import answer_text as clean_text

from .coco import evaluate
from .ground_truth import read_json
from .ocr import ocr_scores
from .refseg import mask_iou, to_mask


def _kind(prompt: str) -> str:
    if prompt.startswith("detect "):
        return "detect"
    if prompt.startswith("segment "):
        return "segment"
    if prompt.startswith("answer "):
        return "count"
    return prompt.split(" ")[0]  # caption, ocr


def _exact(rows: Sequence[Mapping], answers: Mapping[tuple[int, str], str]) -> dict[str, float | int]:
    hits = sum(clean_text(r["text"]) == answers[(r["image_id"], r["prompt"])] for r in rows if not r["error"])
    return {"exact_match": hits / len(rows) if rows else 0.0, "total": len(rows)}


def segmentation_miou(rows: Sequence[Mapping], gt: Mapping) -> dict[str, float | int]:
    masks: dict[tuple[int, str], list[Any]] = defaultdict(list)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for ann in gt["annotations"]:
        masks[(ann["image_id"], names[ann["category_id"]])].append(ann["segmentation"])
    ious, without_masks = [], 0
    for row in rows:
        kind = row["prompt"].removeprefix("segment ").strip()
        truth = np.any([to_mask(m) for m in masks[(row["image_id"], kind)]], axis=0)
        predicted = [o["mask"] for o in row["objects"] or () if o["mask"] is not None and o["label"] == kind]
        if row["error"] or not predicted:
            without_masks += 1
            ious.append(0.0)
            continue
        ious.append(mask_iou(np.any([to_mask(m) for m in predicted], axis=0), truth))
    return {"mIoU": float(np.mean(ious)) if ious else 0.0, "without_masks": without_masks, "total": len(rows)}


def shapes_scores(rows: Sequence[Mapping], manifest: Sequence[Mapping], coco_gt: str | Path) -> dict[str, Any]:
    """All benchmark scores. rows: the label job's output; manifest: the set's (image_id, prompt, answer) rows."""
    gt = read_json(coco_gt)
    answers = {(m["image_id"], m["prompt"]): m["answer"] for m in manifest}
    by_kind: dict[str, list[Mapping]] = defaultdict(list)
    for row in rows:
        if (row["image_id"], row["prompt"]) in answers:
            by_kind[_kind(row["prompt"])].append(row)
    scores: dict[str, Any] = {"rows": len(rows), "errors": sum(bool(r["error"]) for r in rows)}
    scene_ids = sorted(img["id"] for img in gt["images"])
    results, report = rows_to_coco_results(by_kind["detect"], gt["categories"])
    scores["detection"] = evaluate(gt, results, "bbox", image_ids=scene_ids) | {
        "unknown_labels": dict(report.unknown_labels)
    }
    seg_results, _ = rows_to_coco_results(by_kind["segment"], gt["categories"])
    seg_results = [r for r in seg_results if "segmentation" in r]
    scores["segmentation"] = segmentation_miou(by_kind["segment"], gt) | {
        "coco_segm": evaluate(gt, seg_results, "segm", image_ids=scene_ids)
    }
    scores["counting"] = _exact(by_kind["count"], answers)
    scores["caption"] = _exact(by_kind["caption"], answers)
    ocr_rows = by_kind["ocr"]
    ocr = ocr_scores(
        [clean_text(r["text"]) if not r["error"] else "" for r in ocr_rows],
        [answers[(r["image_id"], r["prompt"])] for r in ocr_rows],
    )
    scores["ocr"] = {"exact_match": ocr.exact_match, "cer": ocr.cer, "total": ocr.total}
    return scores


def headline(scores: Mapping[str, Any]) -> dict[str, float]:
    """The five acceptance numbers."""
    return {
        "detection AP50": scores["detection"]["AP50"],
        "segmentation mIoU": scores["segmentation"]["mIoU"],
        "counting accuracy": scores["counting"]["exact_match"],
        "OCR exact match": scores["ocr"]["exact_match"],
        "caption exact match": scores["caption"]["exact_match"],
    }
