"""evals.coco against pycocotools' own COCOeval, called directly here (the reference), plus hand-worked cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from evals.coco import STAT_NAMES, evaluate, evaluate_full, resolve_engine
from evals.plots import mean_pr_curve, plot_pr
from testing.coco_data import random_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode

ENGINES = ["pycocotools", "faster-coco-eval"]


def _engine_checked(engine: str) -> str:
    """Both engines are dependencies of the project: a missing one fails here instead of being skipped."""
    if engine == "faster-coco-eval":
        import faster_coco_eval  # noqa: F401
    return engine


def reference_stats(dataset: dict, results: list[dict], iou_type: str, image_ids=None) -> np.ndarray:
    """pycocotools as its README runs it; for segm the results carry masks only (no bbox), see evals/coco.py."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        res = copy.deepcopy(results)
        if iou_type == "segm":
            res = [{k: v for k, v in r.items() if k != "bbox"} for r in res]
        if res:
            dt = gt.loadRes(res)
        else:  # loadRes([]) raises; this is the results object it would have built
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


def ours(stats: dict) -> np.ndarray:
    return np.array([stats[k] for k in STAT_NAMES])


# (n_images, objects_per_image, n_categories, seed)
DATASETS = [
    (25, 4, 6, 0),  # sparse images: many image/category pairs with only ground truth or only detections
    (10, 70, 5, 1),  # crowded images: more than maxDets=100 detections, so the 1/10/100 cut-offs matter
    (40, 2, 12, 2),  # many categories, several with little or no ground truth
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("n_images,objects,n_categories,seed", DATASETS)
def test_stats_equal_pycocotools(engine, iou_type, n_images, objects, n_categories, seed):
    dataset, results = random_coco(n_images, objects, n_categories=n_categories, seed=seed)
    expected = reference_stats(dataset, results, iou_type)
    got = evaluate(dataset, results, iou_type, engine=_engine_checked(engine))
    np.testing.assert_allclose(ours(got), expected, rtol=0, atol=1e-9)
    assert got["engine"] == engine
    assert got["seconds"] > 0


def test_random_data_reaches_the_corners():
    """The parity data really has crowd regions, empty images, ties and a category never detected."""
    dataset, results = random_coco(25, 4, n_categories=6, seed=0)
    assert any(a["iscrowd"] for a in dataset["annotations"])
    annotated = {a["image_id"] for a in dataset["annotations"]}
    assert len(annotated) < len(dataset["images"])
    detected = {r["category_id"] for r in results}
    assert 6 in {a["category_id"] for a in dataset["annotations"]} and 6 not in detected
    scores = [r["score"] for r in results]
    assert len(set(scores)) < len(scores)


@pytest.mark.parametrize("engine", ENGINES)
def test_subset_of_images_equals_pycocotools(engine):
    dataset, results = random_coco(20, 5, seed=3)
    subset = {1, 2, 5, 8, 13}
    expected = reference_stats(dataset, results, "bbox", image_ids=subset)
    got = evaluate(dataset, results, "bbox", engine=_engine_checked(engine), image_ids=subset)
    np.testing.assert_allclose(ours(got), expected, rtol=0, atol=1e-9)
    assert got["num_images"] == len(subset)


def _one_box_dataset(extra_images: int = 0) -> dict:
    """One 100×100 image with one 40×40 box of class 1 ('cat'); class 2 ('dog') has no ground truth."""
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(1, 2 + extra_images)]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600.0, "iscrowd": 0}
    ann["segmentation"] = [[10, 10, 50, 10, 50, 50, 10, 50]]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": [ann], "categories": cats}


@pytest.mark.parametrize(
    "box,ap,ap50,ap75",
    [
        # identical box: IoU 1 passes all ten thresholds -> AP = AP50 = AP75 = 1
        ([10, 10, 40, 40], 1.0, 1.0, 1.0),
        # 40×30 inside the 40×40 box: IoU = 1200/1600 = 0.75 passes 0.50..0.75 (6 of 10 thresholds) -> AP 0.6
        ([10, 10, 40, 30], 0.6, 1.0, 1.0),
        # 40×24: IoU = 960/1600 = 0.60 passes 0.50, 0.55, 0.60 -> AP 0.3, AP75 0
        ([10, 10, 40, 24], 0.3, 1.0, 0.0),
        # disjoint box: a false positive and a miss -> 0 everywhere
        ([60, 60, 30, 30], 0.0, 0.0, 0.0),
    ],
)
def test_single_box_known_values(box, ap, ap50, ap75):
    got = evaluate(_one_box_dataset(), [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}], "bbox")
    assert (got["AP"], got["AP50"], got["AP75"]) == pytest.approx((ap, ap50, ap75), abs=1e-12)
    # The box is medium (area 1600 in 32²..96²): small and large have no ground truth -> -1 by COCO convention.
    assert got["APs"] == -1 and got["APl"] == -1
    assert got["APm"] == pytest.approx(ap, abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_empty_detections_score_zero_not_crash(engine, iou_type):
    """pycocotools' loadRes([]) raises IndexError; we score it: 0 where ground truth exists, -1 where none does."""
    dataset = _one_box_dataset(extra_images=1)
    got = evaluate(dataset, [], iou_type, engine=_engine_checked(engine))
    expected = {k: 0.0 for k in STAT_NAMES} | {"APs": -1.0, "APl": -1.0, "ARs": -1.0, "ARl": -1.0}
    assert {k: got[k] for k in STAT_NAMES} == expected
    np.testing.assert_allclose(ours(got), reference_stats(dataset, [], iou_type), atol=1e-12)
    assert got["num_detections"] == 0


def test_paths_and_lists_agree_and_inputs_untouched(tmp_path):
    dataset, results = random_coco(8, 5, seed=4)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(dataset))
    res_path.write_text(json.dumps(results))
    before = copy.deepcopy((dataset, results))
    from_lists = evaluate(dataset, results, "segm", engine="pycocotools")
    from_paths = evaluate(gt_path, res_path, "segm", engine="pycocotools")
    assert ours(from_lists).tolist() == ours(from_paths).tolist()
    assert (dataset, results) == before  # both engines write area/id/RLE into what they are given


def test_per_class_table_is_consistent():
    dataset, results = random_coco(25, 4, n_categories=6, seed=0)
    ev = evaluate_full(dataset, results, "bbox", engine="pycocotools")
    with_gt = [c for c in ev.per_class if c.AP >= 0]
    # Every class has the same number of (IoU, recall) cells, so the mean of per-class AP is the overall AP.
    assert np.mean([c.AP for c in with_gt]) == pytest.approx(ev.stats["AP"], abs=1e-12)
    assert np.mean([c.AP50 for c in with_gt]) == pytest.approx(ev.stats["AP50"], abs=1e-12)
    never_detected = next(c for c in ev.per_class if c.category_id == 6)
    assert never_detected.num_det == 0 and never_detected.num_gt > 0 and never_detected.AP == 0.0
    assert sum(c.num_det for c in ev.per_class) == len(results)
    assert ev.per_class[0].name == "class1"


@pytest.mark.parametrize(
    "detections,message",
    [
        # an image id the ground truth lacks: pycocotools only asserts; we name the id
        ([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}], "99"),
        # segm needs masks
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}], "segmentation"),
    ],
)
def test_bad_detections_raise_clear_errors(detections, message):
    with pytest.raises(ValueError, match=message):
        evaluate(_one_box_dataset(), detections, "segm" if message == "segmentation" else "bbox")


def test_engine_names():
    assert resolve_engine("pycocotools") == "pycocotools"
    assert resolve_engine("auto") in ("pycocotools", "faster-coco-eval")
    with pytest.raises(ValueError, match="engine"):
        resolve_engine("detectron2")


def test_pr_plot_is_a_png_and_curve_matches_ap(tmp_path):
    dataset, results = random_coco(10, 4, seed=5)
    ev = evaluate_full(dataset, results, "bbox", engine="pycocotools")
    # The mean over recall thresholds of the IoU-0.5 curve is AP50 (COCO's definition of AP as a 101-point mean).
    assert mean_pr_curve(ev.precision, 0).mean() == pytest.approx(ev.stats["AP50"], abs=1e-12)
    assert mean_pr_curve(ev.precision, None).mean() == pytest.approx(ev.stats["AP"], abs=1e-12)
    path = plot_pr(ev, tmp_path / "pr.png", max_classes=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_mask_only_results_are_boxed_for_bbox_evaluation():
    from pycocotools import mask as mask_utils

    dataset, results = random_coco(10, 4, seed=6)
    mask_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    boxed = []
    for r in mask_only:
        seg = {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode("ascii")}
        boxed.append({**r, "bbox": mask_utils.toBbox(seg).tolist()})
    # The reference gets the boxes computed by pycocotools itself (toBbox), then evaluates them as boxes.
    expected = reference_stats(dataset, [{k: v for k, v in r.items() if k != "segmentation"} for r in boxed], "bbox")
    np.testing.assert_allclose(ours(evaluate(dataset, mask_only, "bbox")), expected, rtol=0, atol=1e-9)
