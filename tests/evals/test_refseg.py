"""Referring-segmentation mIoU and box accuracy on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from evals.refseg import RefSegExample, box_iou, mask_iou, refseg_scores, to_mask

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode


def block(y0: int, y1: int, x0: int, x1: int, shape=(10, 10)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


GT = block(2, 6, 2, 6)  # 4×4 = 16 pixels


@pytest.mark.parametrize(
    "pred,expected",
    [
        (block(2, 6, 2, 6), 1.0),  # identical
        (block(2, 4, 2, 6), 0.5),  # top half: 8 ∩ / 16 ∪
        (block(4, 8, 2, 6), 8 / 24),  # shifted down 2 rows: 8 ∩ / (16 + 16 - 8) ∪
        (block(7, 9, 7, 9), 0.0),  # disjoint
        (np.zeros((10, 10), bool), 0.0),  # empty prediction
    ],
)
def test_mask_iou(pred, expected):
    assert mask_iou(pred, GT) == pytest.approx(expected, abs=1e-12)


def test_mask_iou_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(np.zeros((5, 5), bool), GT)


def test_miou_counts_invalid_predictions_as_zero():
    examples = [
        RefSegExample(GT, (2, 2, 6, 6), block(2, 6, 2, 6), (2, 2, 6, 6)),  # IoU 1, box IoU 1
        RefSegExample(GT, (2, 2, 6, 6), block(2, 4, 2, 6), (2, 2, 6, 4)),  # IoU 0.5, box IoU 8/16 = 0.5 (a hit)
        RefSegExample(GT, (2, 2, 6, 6), None, None),  # invalid: no object -> IoU 0, box miss
        RefSegExample(GT, (2, 2, 6, 6), None, (2, 2, 6, 5)),  # box only: IoU 0 (invalid), box IoU 12/16 = 0.75 hit
    ]
    result = refseg_scores(examples)
    # mIoU = (1 + 0.5 + 0 + 0) / 4; box accuracy = 3 hits / 4
    assert result.miou == pytest.approx(0.375)
    assert result.box_acc == pytest.approx(0.75)
    assert (result.invalid, result.total) == (2, 4)
    assert result.ious == (1.0, 0.5, 0.0, 0.0)
    assert result.as_dict()["box_acc@0.5"] == pytest.approx(0.75)


def test_miou_is_mean_of_per_example_ious_not_cumulative():
    big = np.ones((20, 20), bool)
    small = block(0, 2, 0, 2, shape=(20, 20))
    examples = [
        RefSegExample(big, (0, 0, 20, 20), big, (0, 0, 20, 20)),  # IoU 1 on 400 pixels
        RefSegExample(small, (0, 0, 2, 2), np.zeros((20, 20), bool), (5, 5, 6, 6)),  # IoU 0 on 4 pixels
    ]
    # mean IoU = 0.5; the cumulative form would be 400 / 404.
    assert refseg_scores(examples).miou == pytest.approx(0.5)


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # identical
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap
        ((0, 0, 10, 10), (10, 10, 20, 20), 0.0),  # touching corners only
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # degenerate: empty union
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)


def test_to_mask_reads_rle_polygons_and_arrays():
    rle = mask_utils.encode(np.asfortranarray(GT.astype(np.uint8)))
    compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    assert np.array_equal(to_mask(compressed), GT)  # counts as str (our Parquet/JSON form)
    assert np.array_equal(to_mask(rle), GT)  # counts as bytes (pycocotools' form)
    uncompressed = {"size": [10, 10], "counts": [22, 4, 6, 4, 6, 4, 6, 4, 44]}  # column-major runs
    assert np.array_equal(to_mask(uncompressed), GT)
    polygon = [[2, 2, 6, 2, 6, 6, 2, 6]]  # pycocotools rasterizes polygon edges by its own rule: compare IoU
    assert mask_iou(to_mask(polygon, 10, 10), GT) > 0.5
    assert np.array_equal(to_mask(GT.astype(np.uint8)), GT)
    with pytest.raises(ValueError, match="height and width"):
        to_mask(polygon)
