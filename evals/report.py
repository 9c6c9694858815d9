"""Score a prediction folder against ground truth: pick the metrics from each row's task, collect one report.

This is the `python -m evals` engine, kept apart from argument parsing so that the pipeline and notebooks can call
it. Rows whose `error` is set are skipped and counted per task; predictions and ground-truth records that cannot
be paired are counted too, so a report never looks better because inputs went missing.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import coco
from evals.cider import cider_d
from evals.ground_truth import KINDS, GroundTruth, answers_of, load_ground_truth, match_records, read_json
from evals.ocr import ocr_scores
from evals.refseg import RefSegExample, refseg_scores, to_mask
from evals.vqa import vqa_scores
from rows import ImageResolver, find_parts, read_rows, rows_to_coco_results
from rows.text import answer_text as clean_text

# Which ground-truth kinds each task can be scored against; `raw` (a free prompt) takes whatever the file holds.
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "detect": ("instances", "refexp"),
    "segment": ("instances", "refexp"),
    "caption": ("captions",),
    "describe": ("captions",),
    "answer": ("vqa",),
    "ocr": ("ocr",),
    "raw": KINDS,
}


@dataclass
class Report:
    """metrics: the JSON-ready content of metrics.json; plots: PNG files written; table: printable lines."""

    metrics: dict[str, Any]
    plots: list[Path] = field(default_factory=list)
    table: list[str] = field(default_factory=list)

    @property
    def problem(self) -> str | None:
        """Why nothing could be scored, when no prediction met the ground truth in any task; None otherwise."""
        tasks = self.metrics["tasks"]
        if not tasks:
            return "no rows to score (every row failed, or the predictions are empty)"
        scored = [t for t, m in tasks.items() if "note" not in m and m.get("matched", 1) != 0]
        if scored:
            return None
        return (
            "no prediction belongs to a ground-truth image (compare the rows' image_id and file names with the "
            "ground truth's); see metrics.json"
        )

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / "metrics.json"
        path.write_text(json.dumps(self.metrics, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path


def output_folder(pred: str | Path) -> Path:
    """Where metrics.json and the plots go: the prediction folder, or the folder holding a prediction file."""
    pred = Path(pred)
    return pred if pred.is_dir() else pred.parent


def evaluate_predictions(
    gt: str | Path, pred: str | Path, *, engine: str = "auto", plot_dir: str | Path | None = None
) -> Report:
    """Score `pred` (Parquet folder/file, or a COCO results JSON) against the ground-truth file `gt`.

    plot_dir: where precision-recall PNGs go (None: no plots).
    """
    start = time.perf_counter()
    truth = load_ground_truth(gt)
    pred = Path(pred)
    tasks: dict[str, dict[str, Any]] = {}
    plots: list[Path] = []
    results_json = _results_json(pred)
    if results_json is not None:
        if truth.kind != "instances":
            raise ValueError(f"a COCO results file needs COCO instances ground truth, but {gt} holds {truth.kind}")
        results = read_json(results_json)
        tasks["detect"] = _coco_metrics(truth, results, None, {}, engine, plot_dir, "detect", plots)
        rows_total = errors_total = 0
    else:
        rows = read_rows(pred)
        rows_total = len(rows)
        by_task: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_task[str(row.get("task") or "raw")].append(row)
        errors_total = 0
        for task, task_rows in sorted(by_task.items()):
            good = [r for r in task_rows if not r.get("error")]
            errors = len(task_rows) - len(good)
            errors_total += errors
            metrics = _task_metrics(task, truth, good, engine, plot_dir, plots)
            tasks[task] = {"rows": len(task_rows), "skipped_errors": errors, **metrics}
    engines = sorted({m["engine"] for t in tasks.values() for m in _coco_parts(t)})
    report = {
        "gt": str(gt),
        "gt_kind": truth.kind,
        "predictions": str(pred),
        "engine": ", ".join(engines) if engines else "evals (pure Python)",
        "seconds": time.perf_counter() - start,
        "rows": rows_total,
        "skipped_errors": errors_total,
        "tasks": tasks,
    }
    return Report(report, plots, format_table(report))


def _results_json(pred: Path) -> Path | None:
    """A COCO results file given directly, or the only JSON list in a folder that has no Parquet."""
    if pred.is_file():
        return pred if pred.suffix.lower() == ".json" else None
    if find_parts(pred):
        return None
    lists = [p for p in sorted(pred.glob("*.json")) if p.name != "metrics.json" and isinstance(read_json(p), list)]
    if len(lists) == 1:
        return lists[0]
    raise FileNotFoundError(f"no .parquet files and {len(lists) or 'no'} COCO results JSON lists in {pred}")


def _coco_parts(task_metrics: Mapping) -> list[Mapping]:
    return [task_metrics[k] for k in ("bbox", "segm") if k in task_metrics]


def _task_metrics(
    task: str, truth: GroundTruth, rows: list[dict], engine: str, plot_dir: str | Path | None, plots: list[Path]
) -> dict[str, Any]:
    kinds = TASK_KINDS.get(task, KINDS)
    if truth.kind not in kinds:
        raise ValueError(f"task {task!r} is scored against {' or '.join(kinds)} ground truth, not {truth.kind}")
    resolver = ImageResolver(truth.images())
    if truth.kind == "instances":
        results, conversion = rows_to_coco_results(rows, truth.data["categories"], resolver)
        image_ids = {i for i in map(resolver, rows) if i is not None}
        return _coco_metrics(truth, results, image_ids, conversion.as_dict(), engine, plot_dir, task, plots)
    if truth.kind == "captions":
        return _caption_metrics(truth, rows, resolver)
    matching = match_records(rows, truth.data, resolver)
    if truth.kind == "vqa":
        preds = [clean_text(row.get("text")) for row, _ in matching.pairs]
        scores = vqa_scores(preds, [answers_of(rec) for _, rec in matching.pairs])
    elif truth.kind == "ocr":
        preds = [clean_text(row.get("text")) for row, _ in matching.pairs]
        scores = ocr_scores(preds, [str(rec["text"]) for _, rec in matching.pairs])
    else:
        scores = refseg_scores([_refseg_example(row, rec) for row, rec in matching.pairs])
    return {"metrics": scores.as_dict(), **matching.counts()}


def _coco_metrics(
    truth: GroundTruth,
    results: list[dict],
    image_ids: set[int] | None,
    conversion: dict,
    engine: str,
    plot_dir: str | Path | None,
    task: str,
    plots: list[Path],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conversion:
        out["conversion"] = conversion
    if image_ids is not None and not image_ids:
        out["note"] = "no successful row belongs to a ground-truth image: nothing to evaluate"
        return out
    with_masks = [r for r in results if r.get("segmentation") is not None and not isinstance(r["segmentation"], list)]
    iou_types = ["bbox"] + (["segm"] if with_masks else [])
    for iou_type in iou_types:
        dets = results if iou_type == "bbox" else with_masks
        evaluation = coco.evaluate_full(truth.data, dets, iou_type, engine=engine, image_ids=image_ids)  # type: ignore[arg-type]
        out[iou_type] = evaluation.as_dict()
        if iou_type == "segm":
            out[iou_type]["detections_without_mask"] = len(results) - len(with_masks)
        if plot_dir is not None:
            from evals.plots import plot_pr

            plots.append(plot_pr(evaluation, Path(plot_dir) / f"pr_{task}_{iou_type}.png", max_classes=5))
            out[iou_type]["plot"] = plots[-1].name
    return out


def _caption_metrics(truth: GroundTruth, rows: list[dict], resolver: ImageResolver) -> dict[str, Any]:
    """CIDEr over images that have both a caption row and reference captions (first row per image wins)."""
    references: dict[int, list[str]] = defaultdict(list)
    for ann in truth.data["annotations"]:
        references[int(ann["image_id"])].append(str(ann["caption"]))
    candidates: dict[int, str] = {}
    unmatched = duplicates = 0
    for row in rows:
        image_id = resolver(row)
        if image_id is None or image_id not in references:
            unmatched += 1
        elif image_id in candidates:
            duplicates += 1
        else:
            candidates[image_id] = clean_text(row.get("text"))
    result = cider_d(candidates, {k: references[k] for k in candidates})
    missing = len(set(references) - set(candidates))
    counts = {"matched": len(candidates), "unmatched_predictions": unmatched, "duplicates": duplicates}
    return {"metrics": result.as_dict(), **counts, "missing": missing}


def _refseg_example(row: Mapping, rec: Mapping) -> RefSegExample:
    """The row's first object against the record's object; masks at the ground truth's full resolution."""
    height = int(rec.get("height") or row["height"])
    width = int(rec.get("width") or row["width"])
    gt_mask = to_mask(rec["segmentation"], height, width) if rec.get("segmentation") is not None else None
    x, y, w, h = (float(v) for v in rec["bbox"]) if rec.get("bbox") is not None else _mask_box(gt_mask)
    objects = row.get("objects") or []
    first = objects[0] if objects else None
    pred_mask = to_mask(first["mask"]) if first is not None and first.get("mask") is not None else None
    if gt_mask is None:
        raise ValueError(f"referring-expression record for image {rec.get('image_id')} has no segmentation")
    return RefSegExample(
        gt_mask=gt_mask,
        gt_box=(x, y, x + w, y + h),
        pred_mask=pred_mask,
        pred_box=tuple(float(v) for v in first["box"]) if first is not None else None,
    )


def _mask_box(mask: Any) -> tuple[float, float, float, float]:
    import numpy as np

    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0.0, 0.0, 0.0, 0.0
    return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


def format_table(report: Mapping[str, Any]) -> list[str]:
    """Printable lines: one block per task with its metrics, then the per-class table of each COCO evaluation."""
    lines = [f"ground truth: {report['gt']} ({report['gt_kind']})", f"predictions:  {report['predictions']}"]
    lines.append(
        f"engine: {report['engine']}   seconds: {report['seconds']:.2f}   rows: {report['rows']}   "
        f"skipped (error): {report['skipped_errors']}"
    )
    per_class_blocks = []
    for task, metrics in report["tasks"].items():
        lines.append("")
        lines.append(f"{'task':<10} {'metric':<22} {'value':>10}")
        for part in ("bbox", "segm"):
            if part in metrics:
                m = metrics[part]
                for name in coco.STAT_NAMES:
                    lines.append(f"{task:<10} {part + ' ' + name:<22} {m[name]:>10.4f}")
                lines.append(f"{task:<10} {part + ' engine':<22} {m['engine']}")
                lines.append(f"{task:<10} {part + ' seconds':<22} {m['seconds']:>10.3f}")
                per_class = [coco.ClassAP(**c) for c in m["per_class"]]
                per_class_blocks.append(f"\n{task} {part}: per-class AP (×100)\n" + coco.format_per_class(per_class))
        for name, value in metrics.get("metrics", {}).items():
            text = f"{value:>10.4f}" if isinstance(value, float) else f"{value:>10}"
            lines.append(f"{task:<10} {name:<22} {text}")
        counts = {k: v for k, v in metrics.items() if isinstance(v, int)}
        if counts:
            lines.append(f"{task:<10} " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for block in per_class_blocks:
        lines.extend(block.split("\n"))
    return lines
