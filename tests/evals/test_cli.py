"""`python -m evals` on small Parquet folders (rows.ROW_SCHEMA) and on a COCO results JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from evals.coco import STAT_NAMES
from jobs.evaluate import main
from rows import ROW_SCHEMA, rows_to_coco_results
from rows.text import answer_text as clean_text
from testing.coco_data import random_coco
from tests.evals.test_coco import reference_stats

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode

ROOT = Path(__file__).resolve().parents[2]

SCHEMA = ROW_SCHEMA  # the one schema of the output rows


def row(image_id, task, prompt, text="", objects=(), error=None, width=100, height=100, path=None) -> dict:
    return {
        "image_id": image_id,
        "path": path or f"/data/{image_id:06d}.jpg",
        "width": width,
        "height": height,
        "task": task,
        "prompt": prompt,
        "text": text,
        "objects": list(objects),
        "error": error,
        "model": "tiny",
        "seconds": 0.01,
    }


def write_parts(folder: Path, rows: list[dict], parts: int = 2) -> Path:
    """The pipeline's layout: OUTPUT/predictions/part-*.parquet, plus a hidden half-written part to be ignored."""
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        table = pa.Table.from_pylist(rows[i::parts], schema=SCHEMA)
        pq.write_table(table, folder / "predictions" / f"part-{i:05d}.parquet")
    (folder / "predictions" / ".part-99999.parquet").write_bytes(b"PAR1 half written")
    return folder


def rle(mask: np.ndarray) -> dict:
    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode("ascii")}


def run_cli(capsys, gt: Path, pred: Path, *extra: str) -> tuple[int, str, dict | None]:
    code = main(["--gt", str(gt), "--pred", str(pred), *extra])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    folder = pred if pred.is_dir() else pred.parent
    metrics_path = folder / "metrics.json"
    return code, out, json.loads(metrics_path.read_text()) if metrics_path.exists() else None


@pytest.fixture()
def detection_run(tmp_path):
    """Random COCO ground truth and a Parquet folder of `segment` rows holding the same detections as objects."""
    dataset, results = random_coco(12, 5, n_categories=4, seed=7)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in dataset["images"]}
    for r in results:
        x, y, w, h = r["bbox"]
        # Upper-case labels: matched to category names case-insensitively.
        by_image[r["image_id"]].append(
            {
                "label": names[r["category_id"]].upper(),
                "box": [x, y, x + w, y + h],
                "score": r["score"],
                "mask": r["segmentation"],
            }
        )
    by_image[1].append({"label": "unicorn", "box": [0, 0, 5, 5], "score": 0.5, "mask": None})  # not a category
    rows = []
    for img in dataset["images"]:
        failed = img["id"] == 3
        objects = [] if failed else by_image[img["id"]]
        error = "CUDA out of memory" if failed else None
        rows.append(
            row(
                img["id"], "segment", "segment class1 ; class2", "<loc...>", objects, error, img["width"], img["height"]
            )
        )
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(dataset))
    return dataset, results, gt, write_parts(tmp_path / "out", rows)


def test_parquet_detections_match_pycocotools(capsys, detection_run):
    dataset, results, gt, out = detection_run
    code, printed, metrics = run_cli(capsys, gt, out, "--engine", "pycocotools")
    assert code == 0
    # Image 3's row failed: it is skipped, counted, and left out of the evaluated image set.
    evaluated = [img["id"] for img in dataset["images"] if img["id"] != 3]
    kept = [r for r in results if r["image_id"] != 3]
    task = metrics["tasks"]["segment"]
    assert (metrics["skipped_errors"], task["skipped_errors"], task["rows"]) == (1, 1, 12)
    for iou_type in ("bbox", "segm"):
        expected = reference_stats(dataset, kept, iou_type, image_ids=evaluated)
        got = np.array([task[iou_type][k] for k in STAT_NAMES])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert task[iou_type]["engine"] == "pycocotools" and task[iou_type]["seconds"] > 0
        assert (out / task[iou_type]["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert task["conversion"]["unknown_labels"] == {"unicorn": 1}
    assert metrics["engine"] == "pycocotools" and metrics["seconds"] > 0
    assert "segment    bbox AP" in printed and "per-class AP" in printed and "class1" in printed


def test_coco_results_json_via_subprocess(tmp_path):
    dataset, results = random_coco(6, 4, n_categories=3, seed=8)
    gt, pred = tmp_path / "gt.json", tmp_path / "run" / "results.json"
    pred.parent.mkdir()
    gt.write_text(json.dumps(dataset))
    pred.write_text(json.dumps(results))
    proc = subprocess.run(
        [sys.executable, "-m", "evals", "--gt", str(gt), "--pred", str(pred), "--no-plots"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "detect     bbox AP50" in proc.stdout and "segm AP" in proc.stdout
    metrics = json.loads((pred.parent / "metrics.json").read_text())
    np.testing.assert_allclose(
        [metrics["tasks"]["detect"]["bbox"][k] for k in STAT_NAMES],
        reference_stats(dataset, results, "bbox"),
        atol=1e-9,
    )
    assert metrics["tasks"]["detect"]["segm"]["engine"] in ("pycocotools", "faster-coco-eval")
    assert not list(pred.parent.glob("*.png"))  # --no-plots


def test_vqa_rows(capsys, tmp_path):
    gt = tmp_path / "vqa.json"
    records = [
        {"image_id": 1, "question": "What color is the cat?", "answers": ["white"] * 10},
        {"image_id": 1, "question": "How many cats?", "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8},
        {"image_id": 2, "question": "Is it raining?", "answers": ["no"] * 10},  # no prediction: counted as missing
    ]
    gt.write_text(json.dumps(records))
    rows = [
        row(1, "answer", "answer en what color is the cat?", "White<eos>"),  # exact after normalization: 1
        row(1, "answer", "answer en How many cats?", "two"),  # 2 of 10 match: (2 × 1/3 + 8 × 2/3) / 10 = 0.6
        row(5, "answer", "answer en Who?", "me"),  # image not in the ground truth
        row(1, "answer", "answer en Anything?", error="timeout"),  # failed row
    ]
    code, printed, metrics = run_cli(capsys, gt, write_parts(tmp_path / "out", rows, parts=1))
    assert code == 0
    task = metrics["tasks"]["answer"]
    assert task["metrics"]["exact_match"] == pytest.approx(1.0)  # "two" -> "2" is among the answers
    assert task["metrics"]["vqa_accuracy"] == pytest.approx((1.0 + 0.6) / 2)
    assert (task["matched"], task["unmatched_predictions"], task["missing"], task["skipped_errors"]) == (2, 1, 1, 1)
    assert "vqa_accuracy" in printed


def test_caption_and_ocr_rows(capsys, tmp_path):
    captions = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A cat."}, {"id": 2, "image_id": 2, "caption": "A dog."}],
    }
    gt = tmp_path / "captions.json"
    gt.write_text(json.dumps(captions))
    # Image ids unknown to the ground truth: rows are tied to it by file name instead.
    rows = [
        row(101, "caption", "caption en", "a cat<eos>", path="/x/a.jpg"),
        row(102, "caption", "caption en", "a dog"),
    ]
    rows[1]["path"] = "/x/b.jpg"
    code, _, metrics = run_cli(capsys, gt, write_parts(tmp_path / "cap", rows))
    assert code == 0
    assert metrics["tasks"]["caption"]["metrics"]["CIDEr"] == pytest.approx(5.0)  # see test_evals_text CIDEr cases

    ocr_gt = tmp_path / "ocr.json"
    ocr_gt.write_text(json.dumps([{"image_id": 1, "text": "STOP"}, {"image_id": 2, "text": "ONE WAY"}]))
    rows = [row(1, "ocr", "ocr", "STOP<eos>"), row(2, "ocr", "ocr", "ONE WAY\n")]
    code, _, metrics = run_cli(capsys, ocr_gt, write_parts(tmp_path / "ocr", rows))
    assert code == 0
    assert metrics["tasks"]["ocr"]["metrics"] == {"CER": 0.0, "WER": 0.0, "exact_match": 1.0, "total": 2}


def test_referring_segmentation_rows(capsys, tmp_path):
    gt_mask = np.zeros((20, 30), bool)
    gt_mask[4:12, 6:14] = True  # 8×8 = 64 pixels
    records = [
        {"image_id": 1, "prompt": "segment left cat", "bbox": [6, 4, 8, 8], "segmentation": rle(gt_mask)},
        {"image_id": 1, "expression": "right cat", "bbox": [6, 4, 8, 8], "segmentation": rle(gt_mask)},
    ]
    gt = tmp_path / "refcoco.json"
    gt.write_text(json.dumps(records))
    half = np.zeros((20, 30), bool)
    half[4:8, 6:14] = True  # top half of the object: IoU 32 / 64
    rows = [
        row(
            1,
            "segment",
            "segment left cat",
            objects=[{"label": "left cat", "box": [6, 4, 14, 8], "score": -0.1, "mask": rle(half)}],
            width=30,
            height=20,
        ),
        row(1, "segment", "segment right cat", objects=[], width=30, height=20),  # no object: invalid, IoU 0
    ]
    code, printed, metrics = run_cli(capsys, gt, write_parts(tmp_path / "ref", rows, parts=1))
    assert code == 0
    m = metrics["tasks"]["segment"]["metrics"]
    # mIoU = (0.5 + 0) / 2; box IoU of the first = 32/64 = 0.5 -> a hit; the second has no box -> 1 of 2
    assert (m["mIoU"], m["box_acc@0.5"], m["invalid"], m["total"]) == (0.25, 0.5, 1, 2)
    assert "mIoU" in printed


def test_task_and_ground_truth_mismatch_is_an_error(capsys, tmp_path, detection_run):
    _, _, gt, _ = detection_run
    out = write_parts(tmp_path / "cap", [row(1, "caption", "caption en", "a cat")], parts=1)
    assert main(["--gt", str(gt), "--pred", str(out)]) == 2
    assert "captions" in capsys.readouterr().err


def test_convert_helpers():
    assert clean_text("a cat <eos><pad><pad>") == "a cat"
    assert clean_text(None) == ""
    rows = [
        row(
            1, "detect", "detect cat", objects=[{"label": " Cat ", "box": [1, 2, 11, 22], "score": None, "mask": None}]
        ),
        row(2, "detect", "detect cat", error="boom"),
    ]
    results, report = rows_to_coco_results(rows, {"cat": 7})
    # label matched after trimming/case-folding, box to [x, y, w, h], missing score -> 1.0, no mask -> no segmentation
    assert results == [{"image_id": 1, "category_id": 7, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 1.0}]
    assert (report.rows, report.error_rows, report.results) == (2, 1, 1)


def test_all_rows_failed_reports_nothing_to_evaluate(capsys, tmp_path, detection_run):
    _, _, gt, _ = detection_run
    rows = [row(1, "detect", "detect class1", error="oom"), row(2, "detect", "detect class1", error="oom")]
    code, out, metrics = run_cli(capsys, gt, write_parts(tmp_path / "failed", rows, parts=1))
    assert code == 1  # nothing was scored: say why in one line, not only inside metrics.json
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        "error: no prediction belongs to a ground-truth image (compare the rows' image_id and file names with the "
        "ground truth's); see metrics.json"
    ]
    task = metrics["tasks"]["detect"]
    assert task["skipped_errors"] == 2 and "bbox" not in task and "nothing to evaluate" in task["note"]
