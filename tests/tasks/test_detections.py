"""tasks.detections, tasks.adapters and tasks.draw: the Detections-like result, supervision, annotated images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from tasks import Detect, Detections

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # supervision warns that OpenCV is missing and falls back to numpy
    import supervision as sv

    from tasks.adapters import from_supervision, to_supervision
    from tasks.draw import draw_detections, label_texts


def three(mask: bool = True, confidence: bool = True) -> Detections:
    masks = np.zeros((3, 37, 53), dtype=bool)
    masks[0, 2:10, 3:20] = masks[1, 20:30, 30:50] = masks[2, 0:5, 0:5] = True
    return Detections(
        xyxy=np.array([[3, 2, 20, 10], [30, 20, 50, 30], [0, 0, 5, 5]], dtype=float),
        mask=masks if mask else None,
        confidence=np.array([0.9, 0.2, 0.6]) if confidence else None,
        class_id=np.array([0, 1, -1]),
        labels=np.array(["cat", "犬", "other thing"]),
    )


INVALID = [
    # (fields, expected message)
    ({"xyxy": np.zeros((2, 3))}, r"expected xyxy of shape \(N, 4\) but got \(2, 3\)"),  # 3 coordinates
    ({"xyxy": np.zeros(4)}, r"expected xyxy of shape \(N, 4\) but got \(4,\)"),  # not batched
    ({"xyxy": np.zeros((2, 4)), "mask": np.zeros((3, 5, 5), bool)}, r"mask of shape \(2, H, W\)"),  # length
    ({"xyxy": np.zeros((1, 4)), "mask": np.zeros((1, 5, 5))}, "mask of dtype bool but got float64"),  # not bool
    ({"xyxy": np.zeros((2, 4)), "confidence": np.zeros(3)}, r"confidence of shape \(2,\) but got \(3,\)"),
    ({"xyxy": np.zeros((2, 4)), "class_id": np.zeros(2)}, "class_id of an integer dtype"),  # float ids
    ({"xyxy": np.zeros((2, 4)), "labels": ["a"]}, r"labels of shape \(2,\) but got \(1,\)"),  # one label short
]


@pytest.mark.parametrize(("fields", "message"), INVALID)
def test_validation_messages(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detections(**fields)


def test_defaults_and_empty() -> None:
    dets = Detections(xyxy=[[0, 0, 1, 1]])
    assert list(dets.class_id) == [-1] and list(dets.labels) == [""]
    assert len(Detections.empty()) == 0 and Detections(xyxy=[]).xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    ("index", "labels"),
    [
        (np.array([True, False, True]), ["cat", "other thing"]),  # boolean mask
        (slice(1, None), ["犬", "other thing"]),  # slice
        (1, ["犬"]),  # an int keeps the Detections type
        ([2, 0], ["other thing", "cat"]),  # fancy index reorders
    ],
)
def test_indexing(index: object, labels: list[str]) -> None:
    dets = three()
    sub = dets[index]  # type: ignore[index]
    assert list(sub.labels) == labels
    assert len(sub) == len(labels) == len(sub.mask) == len(sub.confidence) == len(sub.class_id)


def test_indexing_by_a_condition_reads_naturally() -> None:
    dets = three()
    assert list(dets[dets.confidence > 0.5].labels) == ["cat", "other thing"]
    with pytest.raises(IndexError, match=r"boolean index of shape \(3,\)"):
        dets[np.array([True, False])]


@pytest.mark.parametrize(("mask", "confidence"), [(True, True), (False, False)])  # everything / boxes only
def test_supervision_round_trip(mask: bool, confidence: bool) -> None:
    dets = three(mask, confidence)
    theirs = to_supervision(dets)
    assert isinstance(theirs, sv.Detections) and len(theirs) == 3
    assert list(theirs.data["class_name"]) == ["cat", "犬", "other thing"]
    back = from_supervision(theirs)
    np.testing.assert_allclose(back.xyxy, dets.xyxy)
    assert list(back.labels) == list(dets.labels) and list(back.class_id) == list(dets.class_id)
    if mask:
        np.testing.assert_array_equal(back.mask, dets.mask)
        np.testing.assert_allclose(back.confidence, dets.confidence, rtol=1e-6)
    else:
        assert back.mask is None and back.confidence is None


def test_from_supervision_fills_missing_fields() -> None:
    back = from_supervision(sv.Detections(xyxy=np.array([[0, 0, 2, 2]], dtype=float)))
    assert list(back.class_id) == [-1] and list(back.labels) == [""] and back.confidence is None


def test_supervision_filtering_works_on_converted_results() -> None:
    # supervision's own operations apply to what we hand it
    theirs = to_supervision(three())
    assert list(theirs[theirs.confidence > 0.5].data["class_name"]) == ["cat", "other thing"]


def test_label_texts() -> None:
    assert label_texts(three()) == ["cat 0.90", "犬 0.20", "other thing 0.60"]
    assert label_texts(three(confidence=False)) == ["cat", "犬", "other thing"]
    assert label_texts(Detections(xyxy=[[0, 0, 1, 1]])) == ["object"]  # an empty label still gets a tag


def test_draw_returns_a_new_image_with_boxes_and_masks() -> None:
    image = Image.new("RGB", (53, 37), (0, 0, 0))
    out = draw_detections(image, three())
    assert isinstance(out, Image.Image) and out.size == (53, 37) and out.mode == "RGB"
    pixels = np.asarray(out)
    assert pixels[20:30, 30:50].any()  # the second mask is tinted
    assert not np.asarray(image).any()  # the input is untouched


def test_draw_on_a_real_photo_from_parsed_output() -> None:
    from skimage import data

    photo = Image.fromarray(data.astronaut())  # 512 x 512
    text = "<loc0010><loc0100><loc1000><loc0900> person ; <loc0600><loc0600><loc0700><loc0700> 宇宙飛行士"
    dets = Detect(["person"]).parse(text, width=512, height=512).detections()
    out = draw_detections(photo, dets)
    assert out.size == photo.size
    changed = np.any(np.asarray(out) != np.asarray(photo), axis=-1)
    x0, y0 = (int(v) for v in dets.xyxy[0, :2])
    assert changed[y0 + 100, x0]  # the box's left edge was drawn
    assert not changed[5, 5]  # a corner far from both boxes and their labels was not


def test_draw_with_nothing_to_draw_is_a_copy() -> None:
    image = Image.new("RGB", (9, 7), (10, 20, 30))
    out = draw_detections(image, Detections.empty())
    assert out is not image and np.array_equal(np.asarray(out), np.asarray(image))


def test_draw_rejects_masks_of_another_size() -> None:
    with pytest.raises(ValueError, match="masks of the image size"):
        draw_detections(Image.new("RGB", (10, 10)), three())
