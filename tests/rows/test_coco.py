"""Rows -> COCO with one label rule, the same in the label job's exports and in `python -m evals`."""

from __future__ import annotations

import json

from exports import coco
from exports.base import ExportInput
from rows import PartStore, categories_for, label_key, rows_to_table


def row(image_id: int, label: str, box: list[float]) -> dict:
    obj = {"label": label, "box": box, "score": 0.9, "mask": None}
    base = {"path": f"{image_id}.png", "width": 100, "height": 80, "task": "detect", "prompt": "detect cat"}
    return base | {"image_id": image_id, "text": "", "objects": [obj], "error": None, "model": "m", "seconds": 0.0}


def test_label_key_folds_case_and_spaces():
    assert label_key("  Traffic   LIGHT ") == label_key("traffic light") == "traffic light"


def test_categories_keep_known_ids_and_spellings_and_number_the_rest_from_one():
    assert categories_for(["cat", "dog"]) == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    known = [{"id": 1, "name": "person"}, {"id": 17, "name": "Cat"}]
    assert categories_for(["cat", "dog", "CAT"], known) == [{"id": 17, "name": "Cat"}, {"id": 2, "name": "dog"}]


def test_a_label_in_other_case_is_kept_by_the_job_export_and_by_evals_alike(tmp_path):
    from evals.report import evaluate_predictions

    rows = [row(1, "Cat", [10, 10, 50, 40]), row(2, "cat", [0, 0, 30, 30]), row(2, "zebra", [0, 0, 5, 5])]
    store = PartStore(tmp_path / "out" / "predictions")
    store.prepare()
    store.write(rows_to_table(rows))
    job = ExportInput(rows=store.iter_rows, categories=categories_for(["cat"]))
    report = coco.write_results(job, store.folder.join("..", "coco_results.json"))
    exported = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert [r["image_id"] for r in exported] == [1, 2] and report.unknown_labels == {"zebra": 1}
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 80} for i in (1, 2)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    metrics = evaluate_predictions(tmp_path / "gt.json", tmp_path / "out").metrics
    detect = metrics["tasks"]["detect"]
    assert detect["bbox"]["AP"] > 0.99  # both objects, "Cat" included, matched their ground truth
    assert detect["conversion"]["results"] == len(exported) == 2
