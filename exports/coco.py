"""COCO files from rows, written as they stream: a results list (what pycocotools' loadRes and `python -m evals`
read) and a full dataset (images, annotations, categories) to train on.

Both go through rows.coco_format, the conversion `python -m evals` uses, so the job's exports and its scores keep and
drop the same objects (labels matched case- and whitespace-insensitively).
"""

from __future__ import annotations

import json

from exports.base import ExportInput
from rows import ConversionReport, rows_to_coco_results
from rows.coco_format import annotation_entry, dataset_categories, image_entry
from storage import Location


def _write_json_array(stream, items) -> int:
    stream.write(b"[")
    n = 0
    for item in items:
        stream.write((b"," if n else b"") + json.dumps(item, ensure_ascii=False).encode("utf-8"))
        n += 1
    stream.write(b"]")
    return n


def write_results(job: ExportInput, out: Location) -> ConversionReport:
    """coco_results.json: [{image_id, category_id, bbox, score[, segmentation]}] of every successful row."""
    report = ConversionReport()

    def results():
        for row in job.rows():
            if not row.get("error") and job.object_filter.active:
                row = dict(row) | {"objects": job.object_filter(row["objects"] or [])}
            found, _ = rows_to_coco_results([row], job.categories, report=report)
            yield from found

    with out.open_output() as stream:
        _write_json_array(stream, results())
    return report


def write_dataset(job: ExportInput, out: Location, min_score: float = 0.0) -> dict[str, int]:
    """coco_dataset.json: every image that decoded (objects or not), once, and its objects scoring at least
    min_score; returns the numbers of images and annotations. Two passes over the rows: images, then annotations."""
    with out.open_output() as stream:
        stream.write(b'{"info": {"description": "labeled by paligemma-batch (python -m jobs.label)"}, "images": ')
        images = _write_json_array(stream, (image_entry(r, job.file_name(r)) for r in job.labeled_rows()))
        stream.write(b', "annotations": ')

        def annotations():
            n = 0
            for row in job.labeled_rows():
                results, _ = rows_to_coco_results([row], job.categories)
                for result in results:
                    if result["score"] >= min_score:
                        n += 1
                        yield annotation_entry(result, n)

        count = _write_json_array(stream, annotations())
        stream.write(b', "categories": ' + json.dumps(dataset_categories(job.categories)).encode("utf-8") + b"}")
    return {"images": images, "annotations": count}


def write(job: ExportInput, out: Location) -> dict:
    """exports/coco/: coco_results.json and coco_dataset.json."""
    out.mkdir()
    report = write_results(job, out.join("coco_results.json"))
    dataset = write_dataset(job, out.join("coco_dataset.json"))
    return {"images": dataset["images"], "objects": dataset["annotations"], "results": report.results,
            "annotations": dataset["annotations"], "unknown_labels": report.as_dict()["unknown_labels"]}  # fmt: skip
