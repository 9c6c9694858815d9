"""COCO detection and mask mAP: the 12 standard stats, identical to pycocotools' COCOeval.

pycocotools is the reference definition, so this module never re-implements the matching or the
precision/recall accumulation: it drives an engine that has that definition. Two engines are known:

- "pycocotools": the reference itself (Python loops; slow on large sets).
- "faster-coco-eval": a C++ port with the same API. It is used only because tests/test_evals_coco.py shows it
  gives pycocotools' numbers (to 1e-9) on random data with crowd regions, empty images, tied scores and
  categories without detections. "auto" picks it when it is installed, pycocotools otherwise.

What this module adds around the engine, each for a reason:
- an empty detection list evaluates (pycocotools' `loadRes` indexes `anns[0]` and raises): every category with
  ground truth in an area range then scores 0 there, and ranges without ground truth stay -1, which is what
  COCOeval computes for an image set with no detections;
- the caller's lists and dicts are never modified (both engines write `area`, `id` and RLEs into them);
- for "segm", a detection's `bbox` is dropped before loading, so its area (used for the small/medium/large ranges)
  is the mask area, as for ground truth; pycocotools would take the box area whenever `bbox` is present, which
  makes segm APs/APm/APl depend on whether the exporter wrote boxes. (detectron2 does the same.)
- for "bbox", a result with only a mask gets its mask's bounding box, and areas are box areas throughout
  (pycocotools would switch to mask areas for the whole file when its first result has no bbox);
- the result names the engine and how long loading + evaluation took, and keeps the precision array for the
  per-class table and the precision-recall plot (evals/plots.py).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IouType = Literal["bbox", "segm"]
ENGINES = ("auto", "pycocotools", "faster-coco-eval")


@dataclass(frozen=True)
class ClassAP:
    """One row of the per-class table. AP values are -1 when the class has no ground truth (COCO's convention)."""

    category_id: int
    name: str
    AP: float
    AP50: float
    AP75: float
    num_gt: int  # non-crowd ground-truth instances in the evaluated images
    num_det: int  # detections with this category_id in the evaluated images


@dataclass
class CocoEvaluation:
    """Everything one COCOeval run produced that a report needs.

    precision: float64[T, R, K, A, M] as COCOeval's `eval["precision"]`: T IoU thresholds (0.50:0.05:0.95),
    R = 101 recall thresholds, K categories (sorted ids), A area ranges (all, small, medium, large),
    M max-detection settings (1, 10, 100); -1 where a category has no ground truth.
    """

    iou_type: str
    stats: dict[str, float]
    per_class: list[ClassAP]
    precision: np.ndarray = field(repr=False)
    iou_thresholds: np.ndarray = field(repr=False)
    recall_thresholds: np.ndarray = field(repr=False)
    engine: str = "pycocotools"
    seconds: float = 0.0
    num_images: int = 0
    num_detections: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the 12 stats first, then engine, seconds, counts and the per-class table."""
        return {
            **self.stats,
            "iou_type": self.iou_type,
            "engine": self.engine,
            "seconds": self.seconds,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "per_class": [vars(c).copy() for c in self.per_class],
        }


def evaluate(
    gt_json_path: str | Path | dict,
    detections: str | Path | Sequence[dict],
    iou_type: IouType = "bbox",
    *,
    engine: str = "auto",
    image_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """The 12 COCO stats (keys in STAT_NAMES) plus engine, seconds, counts and a per-class table.

    gt_json_path: a COCO instances file, or the already-loaded dict (it is copied, not modified).
    detections: a COCO results list ({image_id, category_id, bbox [x, y, w, h], score, segmentation}) or its path.
    image_ids: evaluate on these images only (default: every image of the ground truth, as pycocotools does).
    """
    return evaluate_full(gt_json_path, detections, iou_type, engine=engine, image_ids=image_ids).as_dict()


def evaluate_full(
    gt: str | Path | dict,
    detections: str | Path | Sequence[dict],
    iou_type: IouType = "bbox",
    *,
    engine: str = "auto",
    image_ids: Iterable[int] | None = None,
) -> CocoEvaluation:
    """Like `evaluate`, returning the CocoEvaluation (with the precision array the plots need)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"expected iou_type 'bbox' or 'segm' but got {iou_type!r}")
    name = resolve_engine(engine)
    coco_cls, eval_cls = _engine_classes(name)
    start = time.perf_counter()
    dataset = _load_json(gt) if isinstance(gt, (str, Path)) else copy.deepcopy(gt)
    results = _prepare_results(detections, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):  # both engines print progress and the summary table
        coco_gt = coco_cls()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        _check_image_ids(results, coco_gt)
        coco_dt = _empty_results(coco_cls, coco_gt) if not results else coco_gt.loadRes(results)
        cocoeval = eval_cls(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            cocoeval.params.imgIds = sorted({int(i) for i in image_ids})
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    seconds = time.perf_counter() - start
    stats = {k: float(v) for k, v in zip(STAT_NAMES, cocoeval.stats[:12], strict=True)}
    evaluated = {int(i) for i in cocoeval.params.imgIds}
    precision = np.asarray(cocoeval.eval["precision"], dtype=np.float64)
    iou_thresholds = np.asarray(cocoeval.params.iouThrs, dtype=np.float64)
    return CocoEvaluation(
        iou_type=iou_type,
        stats=stats,
        per_class=_per_class(
            precision, iou_thresholds, [int(c) for c in cocoeval.params.catIds], dataset, results, evaluated
        ),
        precision=precision,
        iou_thresholds=iou_thresholds,
        recall_thresholds=np.asarray(cocoeval.params.recThrs, dtype=np.float64),
        engine=name,
        seconds=seconds,
        num_images=len(evaluated),
        num_detections=sum(1 for r in results if r["image_id"] in evaluated),
    )


def resolve_engine(engine: str = "auto") -> str:
    """'auto' -> 'faster-coco-eval' when importable, else 'pycocotools'; an explicit name is checked."""
    if engine not in ENGINES:
        raise ValueError(f"expected engine in {ENGINES} but got {engine!r}")
    if engine != "auto":
        return engine
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster-coco-eval"


def _engine_classes(name: str) -> tuple[type, type]:
    if name == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _load_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _prepare_results(detections: str | Path | Sequence[dict], iou_type: str) -> list[dict]:
    """Fresh dicts (the engines write into them); for segm, masks required and boxes dropped (see module doc)."""
    loaded = _load_json(detections) if isinstance(detections, (str, Path)) else detections
    if not isinstance(loaded, (list, tuple)):
        raise ValueError(f"expected a list of COCO results but got {type(loaded).__name__}")
    results = []
    for i, det in enumerate(loaded):
        det = dict(det)
        if iou_type == "segm":
            if det.get("segmentation") is None:
                raise ValueError(f"segm evaluation needs a 'segmentation' in every result; result {i} has none")
            det.pop("bbox", None)
            seg = det["segmentation"]
            if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
                seg = {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
            det["segmentation"] = dict(seg) if isinstance(seg, dict) else seg
        else:
            seg = det.pop("segmentation", None)  # loadRes makes a box polygon; a mask here would only cost time
            if det.get("bbox") is None:
                if not isinstance(seg, dict):
                    raise ValueError(
                        f"bbox evaluation needs a 'bbox' (or an RLE mask) in every result; result {i} has none"
                    )
                det["bbox"] = _rle_box(seg)  # what loadRes does for a mask-only result
            det["bbox"] = [float(v) for v in det["bbox"]]
        results.append(det)
    return results


def _rle_box(seg: dict) -> list[float]:
    from pycocotools import mask as mask_utils

    counts = seg["counts"]
    rle = {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return [float(v) for v in mask_utils.toBbox(rle)]


def _check_image_ids(results: list[dict], coco_gt: Any) -> None:
    """pycocotools asserts with 'Results do not correspond to current coco set'; name the ids instead."""
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"detections refer to image ids not in the ground truth: {unknown[:10]}")


def _empty_results(coco_cls: type, coco_gt: Any) -> Any:
    """A results object with no annotations: what loadRes would build for [] if it did not index anns[0]."""
    res = coco_cls()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    res.createIndex()
    return res


def _per_class(
    precision: np.ndarray,
    iou_thresholds: np.ndarray,
    cat_ids: list[int],
    dataset: dict,
    results: list[dict],
    images: set[int],
) -> list[ClassAP]:
    """AP, AP50, AP75 per category at area 'all' and 100 detections, as COCOeval's summary averages them."""
    names = {c["id"]: c.get("name", str(c["id"])) for c in dataset.get("categories", [])}
    num_gt = dict.fromkeys(cat_ids, 0)
    for ann in dataset.get("annotations", []):
        if ann["image_id"] in images and not ann.get("iscrowd", 0) and ann["category_id"] in num_gt:
            num_gt[ann["category_id"]] += 1
    num_det = dict.fromkeys(cat_ids, 0)
    for det in results:
        if det["image_id"] in images and det["category_id"] in num_det:
            num_det[det["category_id"]] += 1

    def mean_valid(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else -1.0

    t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
    rows = []
    for k, cat in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]  # [T, R] at area "all", maxDets 100
        aps = mean_valid(p), mean_valid(p[t50]), mean_valid(p[t75])
        rows.append(ClassAP(cat, names.get(cat, str(cat)), *aps, num_gt=num_gt[cat], num_det=num_det[cat]))
    return rows


def format_per_class(per_class: Sequence[ClassAP]) -> str:
    """A plain-text table of the per-class APs (×100), one class a line."""
    width = max([len("class"), *(len(c.name) for c in per_class)])
    lines = [f"{'class':<{width}}  {'AP':>6} {'AP50':>6} {'AP75':>6} {'#gt':>7} {'#det':>7}"]
    for c in per_class:
        aps = " ".join(f"{v * 100:6.2f}" if v >= 0 else f"{'-':>6}" for v in (c.AP, c.AP50, c.AP75))
        lines.append(f"{c.name:<{width}}  {aps} {c.num_gt:>7d} {c.num_det:>7d}")
    return "\n".join(lines)
