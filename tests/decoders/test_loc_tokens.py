"""decoders.loc_tokens and decoders.scores: the object grammar, its inverse, malformed output, scores."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import (
    DetectedObject,
    coord_to_loc,
    encode_objects,
    format_object,
    loc_to_coord,
    parse_objects,
    parse_objects_with_report,
    span_score,
    tokens_in_span,
)

SETTINGS = settings(max_examples=150, deadline=None)


def locs(y0: int, x0: int, y1: int, x1: int) -> str:
    return "".join(f"<loc{i:04d}>" for i in (y0, x0, y1, x1))


SEGS = "".join(f"<seg{i:03d}>" for i in range(16))


# --- golden cases ------------------------------------------------------------------------------------------------

GOLDEN = [
    # (text, expected labels, expected dropped, expected repaired)
    ("", [], {}, {}),  # empty output: nothing, and nothing to report
    ("<eos>", [], {}, {}),  # only an end token
    (locs(0, 0, 1023, 1023) + " cat", ["cat"], {}, {}),  # one full-image box
    (locs(0, 0, 10, 10) + " cat ; " + locs(5, 5, 20, 20) + " dog<eos>", ["cat", "dog"], {}, {}),  # two, eos at end
    (locs(0, 0, 10, 10) + SEGS + " cat", ["cat"], {}, {}),  # with a mask
    (locs(0, 0, 10, 10) + SEGS, [""], {}, {}),  # referring segmentation: no label at all
    (locs(0, 0, 10, 10) + " red car's left-door", ["red car's left-door"], {}, {}),  # spaces, apostrophe, hyphen
    (locs(0, 0, 10, 10) + " 猫 ; " + locs(1, 1, 9, 9) + " кошка", ["猫", "кошка"], {}, {}),  # non-Latin scripts
    ("<loc0001><loc0002><loc0003> cat", [], {"too_few_locs": 1}, {}),  # truncated group
    (locs(0, 0, 10, 10) + "<loc0005> cat", [], {"too_many_locs": 1}, {}),  # five locs
    (locs(0, 0, 10, 1024) + " cat", [], {"loc_out_of_range": 1}, {}),  # index past 1023
    (locs(10, 0, 10, 5) + " cat", [], {"empty_box": 1}, {}),  # zero height
    (locs(10, 20, 0, 5) + " cat", ["cat"], {}, {"swapped_corners": 1}),  # reversed corners are swapped
    (locs(0, 0, 10, 10) + SEGS[:-8] + " cat", ["cat"], {}, {"too_few_segs": 1}),  # 15 segs: box kept, mask dropped
    (locs(0, 0, 10, 10) + SEGS + "<seg001> cat", ["cat"], {}, {"too_many_segs": 1}),  # 17 segs
    (locs(0, 0, 10, 10) + SEGS[:-8] + "<seg200> cat", ["cat"], {}, {"seg_out_of_range": 1}),  # a seg past 127
    ("a cat on a mat", [], {"no_locs": 1}, {}),  # a caption, not objects
    ("here " + locs(0, 0, 10, 10) + " cat", [], {"locs_not_first": 1}, {}),  # text before the tokens
    (locs(0, 0, 10, 10) + " cat " + locs(0, 0, 5, 5), [], {"tokens_in_label": 1}, {}),  # tokens after the label
    (locs(0, 0, 10, 10) + " cat ; ; " + locs(0, 0, 5, 5) + " dog", ["cat", "dog"], {"empty_group": 1}, {}),  # "; ;"
    ("<loc> cat ; <loc12ab> dog", [], {"no_locs": 2}, {}),  # loc-like text that is no token
    ("<<<;;;>>> <loc> <seg> ;", [], {"no_locs": 2, "empty_group": 3}, {}),  # garbage: 5 groups, none an object
]


@pytest.mark.parametrize(("text", "labels", "dropped", "repaired"), GOLDEN)
def test_golden(text: str, labels: list[str], dropped: dict, repaired: dict) -> None:
    report = parse_objects_with_report(text, width=640, height=480)
    assert [o.label for o in report.objects] == labels
    assert report.dropped == Counter(dropped)
    assert report.repaired == Counter(repaired)


def test_boxes_are_pixels_in_xyxy_order() -> None:
    # locs are y_min, x_min, y_max, x_max; /1023 puts <loc1023> on the image edge.
    (obj,) = parse_objects(locs(0, 1023 // 3, 1023, 1023) + " cat", width=300, height=200)
    assert obj.box == pytest.approx((100.0, 0.0, 300.0, 200.0), abs=1e-9)
    assert obj.seg_tokens is None and obj.score is None


def test_span_covers_tokens_and_label() -> None:
    text = locs(0, 0, 10, 10) + " cat ; " + locs(0, 0, 10, 10) + SEGS + " big dog<eos>"
    a, b = parse_objects(text, 100, 100)
    assert text[slice(*a.span)] == locs(0, 0, 10, 10) + " cat"
    assert text[slice(*b.span)] == locs(0, 0, 10, 10) + SEGS + " big dog"
    assert b.seg_tokens == tuple(range(16))


def test_format_rejects_labels_that_break_the_grammar() -> None:
    with pytest.raises(ValueError, match="expected a label"):
        format_object((0, 0, 10, 10), 100, 100, "cat ; dog")


# --- round trip ---------------------------------------------------------------------------------------------------


@given(st.integers(0, 1023))
def test_index_round_trip_is_exact(index: int) -> None:
    assert coord_to_loc(loc_to_coord(index)) == index


@given(st.floats(0.0, 1.0))
def test_coordinate_round_trip_within_half_a_bin(value: float) -> None:
    assert abs(loc_to_coord(coord_to_loc(value)) - value) <= 0.5 / 1023 + 1e-12


@given(st.floats(-5.0, 5.0, allow_nan=False))
def test_coordinates_outside_the_image_clip_to_the_edge(value: float) -> None:
    assert 0 <= coord_to_loc(value) <= 1023


@SETTINGS
@given(
    st.integers(1, 4000),
    st.integers(1, 4000),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
)
def test_pixel_box_round_trip_within_one_bin(width: int, height: int, corners: list[float]) -> None:
    xa, xb, ya, yb = corners
    box = (min(xa, xb) * width, min(ya, yb) * height, max(xa, xb) * width, max(ya, yb) * height)
    objs = parse_objects(format_object(box, width, height, "thing"), width, height)
    if coord_to_loc(box[0] / width) == coord_to_loc(box[2] / width) or coord_to_loc(box[1] / height) == coord_to_loc(
        box[3] / height
    ):
        assert objs == []  # collapsed into one bin: a zero-size box, dropped
        return
    (obj,) = objs
    bins = (width / 1023, height / 1023, width / 1023, height / 1023)
    for got, want, size in zip(obj.box, box, bins, strict=True):
        assert abs(got - want) <= size / 2 + 1e-9


# --- random outputs -----------------------------------------------------------------------------------------------

LABEL_CHARS = st.sampled_from(
    list("abcxyzABC019 '-_.,!?") + list("猫犬の車кошкаПривет") + list("قطةسيارة") + ["é", "ß"]
)
LABELS = st.text(LABEL_CHARS, min_size=0, max_size=20).map(str.strip)


@st.composite
def valid_objects(draw: st.DrawFn) -> tuple[tuple[int, int, int, int], tuple[int, ...] | None, str]:
    y0, y1 = sorted(draw(st.lists(st.integers(0, 1023), min_size=2, max_size=2, unique=True)))
    x0, x1 = sorted(draw(st.lists(st.integers(0, 1023), min_size=2, max_size=2, unique=True)))
    segs = draw(st.none() | st.tuples(*[st.integers(0, 127)] * 16))
    return (y0, x0, y1, x1), segs, draw(LABELS)


def render(loc: tuple[int, ...], segs: tuple[int, ...] | None, label: str) -> str:
    text = "".join(f"<loc{i:04d}>" for i in loc) + "".join(f"<seg{s:03d}>" for s in segs or ())
    return f"{text} {label}" if label else text


@SETTINGS
@given(
    st.lists(valid_objects(), max_size=5), st.integers(1, 2000), st.integers(1, 2000), st.sampled_from(["", "<eos>"])
)
def test_valid_objects_are_recovered_exactly(objects: list, width: int, height: int, end: str) -> None:
    text = " ; ".join(render(*o) for o in objects) + end
    report = parse_objects_with_report(text, width, height)
    assert report.clean
    assert len(report.objects) == len(objects)
    for got, (loc, segs, label) in zip(report.objects, objects, strict=True):
        x0, y0, x1, y1 = got.box
        assert (coord_to_loc(y0 / height), coord_to_loc(x0 / width)) == loc[:2]
        assert (coord_to_loc(y1 / height), coord_to_loc(x1 / width)) == loc[2:]
        assert got.seg_tokens == segs
        assert got.label == label
    # The encoder is the parser's inverse: re-encoding gives back the text (without the end token).
    assert encode_objects(report.objects, width, height) == text.removesuffix(end)


# One malformed group per kind, with the reason the parser must count for it (None: a valid object).
BROKEN = {
    "valid": (locs(1, 2, 30, 40) + " ok", None),
    "three_locs": ("<loc0001><loc0002><loc0003> x", "too_few_locs"),
    "past_1023": (locs(1, 2, 3000, 40) + " x", "loc_out_of_range"),
    "reversed": (locs(30, 40, 1, 2) + " swapped", "swapped_corners"),
    "few_segs": (locs(1, 2, 30, 40) + SEGS[: 9 * 8] + " partial", "too_few_segs"),
    "words": ("just words", "no_locs"),
    "empty_box": (locs(5, 5, 5, 9) + " flat", "empty_box"),
}


@SETTINGS
@given(st.lists(st.sampled_from(sorted(BROKEN)), min_size=1, max_size=6))
def test_malformed_groups_are_counted_and_valid_ones_kept(kinds: list[str]) -> None:
    text = " ; ".join(BROKEN[k][0] for k in kinds)
    report = parse_objects_with_report(text, 1000, 1000)
    reasons = Counter(BROKEN[k][1] for k in kinds if BROKEN[k][1] is not None)
    assert report.dropped + report.repaired == reasons
    kept = [k for k in kinds if k in ("valid", "reversed", "few_segs")]
    assert [o.label for o in report.objects] == [
        {"valid": "ok", "reversed": "swapped", "few_segs": "partial"}[k] for k in kept
    ]
    for obj in report.objects:  # repaired objects are well formed
        assert obj.box[0] < obj.box[2] and obj.box[1] < obj.box[3]
        assert obj.seg_tokens is None


PIECES = [
    "<loc",
    "<loc>",
    "<seg>",
    "<loc0012>",
    "<loc1023>",
    "<loc9999>",
    "<seg005>",
    "<seg999>",
    " ; ",
    ";",
    "<",
    ">",
    "cat",
    " ",
    "<eos>",
    "\n",
]


@SETTINGS
@given(st.lists(st.sampled_from(PIECES), max_size=40) | st.text(max_size=60).map(lambda t: [t]), st.integers(1, 99))
def test_token_soup_never_raises_and_objects_are_well_formed(pieces: list[str], size: int) -> None:
    text = "".join(pieces)
    for obj in parse_objects(text, size, size + 1, tokens=pieces, logprobs=[-0.5] * len(pieces)):
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size + 1
        assert obj.seg_tokens is None or (len(obj.seg_tokens) == 16 and max(obj.seg_tokens) < 128)
        assert not set(obj.label) & set(";<>")
        assert obj.score == pytest.approx(math.exp(-0.5))


# --- agreement with supervision -----------------------------------------------------------------------------------

ASCII_LABELS = st.from_regex(r"[a-z][a-z0-9_\-]{0,8}( [a-z0-9_\-]{1,8}){0,2}", fullmatch=True)


@SETTINGS
@given(st.lists(st.tuples(valid_objects(), ASCII_LABELS), max_size=5), st.integers(1, 2000), st.integers(1, 2000))
def test_boxes_agree_with_supervision_within_its_1024_convention(objects: list, width: int, height: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # supervision warns that OpenCV is missing
        import supervision as sv

    text = " ; ".join(render(loc, None, label) for (loc, _, _), label in objects)
    ours = parse_objects(text, width, height)
    classes = sorted({o.label for o in ours})
    theirs = sv.Detections.from_vlm(vlm=sv.VLM.PALIGEMMA, result=text, resolution_wh=(width, height), classes=classes)
    assert len(theirs) == len(ours)
    if not ours:
        return
    # idx/1023 - idx/1024 = idx/(1023*1024) < 1/1024 of the image side.
    tolerance = np.array([width, height, width, height]) / 1024 + 1e-9
    assert np.all(np.abs(np.array([o.box for o in ours]) - theirs.xyxy) <= tolerance)
    assert list(theirs.data["class_name"]) == [o.label for o in ours]
    assert list(theirs.class_id) == [classes.index(o.label) for o in ours]


# --- scores -------------------------------------------------------------------------------------------------------

SPANS = [
    # (tokens, start, end, expected token indices)
    (["ab", "cd", "ef"], 2, 4, [1]),  # exactly one token
    (["ab", "cd", "ef"], 1, 5, [0, 1, 2]),  # straddling tokens at both edges count
    (["ab", "cd", "ef"], 4, 4, []),  # empty span
    (["ab", "", "cd"], 0, 4, [0, 1, 2]),  # a zero-length piece inside the span counts
    (["ab", "", "cd"], 2, 4, [2]),  # ... but not one on the span's edge
    (["ab", "cd"], 4, 9, []),  # past the end
]


@pytest.mark.parametrize(("tokens", "start", "end", "expected"), SPANS)
def test_tokens_in_span(tokens: list[str], start: int, end: int, expected: list[int]) -> None:
    assert tokens_in_span(tokens, start, end) == expected


def test_span_score_is_exp_of_mean_logprob() -> None:
    assert span_score(["a", "b", "c"], [-1.0, -2.0, -9.0], 0, 2) == pytest.approx(math.exp(-1.5))
    assert span_score(["a"], [-1.0], 5, 6) is None


def test_object_scores_use_only_their_own_tokens() -> None:
    first, second = locs(0, 0, 10, 10) + " cat", locs(0, 0, 10, 10) + " dog"
    # The separator and <eos> have terrible log-probs; they belong to no object and must not lower the scores.
    tokens = [first[:8], first[8:-4], first[-4:], " ;", " ", second, "<eos>"]
    logprobs = [-0.1, -0.2, -0.3, -50.0, -50.0, -0.7, -50.0]
    a, b = parse_objects("".join(tokens), 100, 100, tokens=tokens, logprobs=logprobs)
    assert a.score == pytest.approx(math.exp(-0.2))
    assert b.score == pytest.approx(math.exp(-0.7))


@SETTINGS
@given(st.lists(valid_objects(), min_size=1, max_size=4), st.data())
def test_scores_match_a_character_level_oracle(objects: list, data: st.DataObject) -> None:
    text = " ; ".join(render(*o) for o in objects) + "<eos>"
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=30)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    logprobs = data.draw(st.lists(st.floats(-20, 0), min_size=len(tokens), max_size=len(tokens)))
    owner = [i for i, t in enumerate(tokens) for _ in t]  # token index of every character
    for obj in parse_objects(text, 50, 50, tokens=tokens, logprobs=logprobs):
        hit = sorted(set(owner[obj.span[0] : obj.span[1]]))
        assert obj.score == pytest.approx(math.exp(np.mean([logprobs[i] for i in hit])))


@pytest.mark.parametrize(
    ("tokens", "logprobs", "message"),
    [
        (["a"], None, "together"),  # tokens without logprobs
        (["a", "b"], [-1.0], "one logprob per token"),  # lengths differ
        (["x"], [-1.0], "join to the text"),  # pieces that are not the text
    ],
)
def test_token_inputs_that_do_not_fit_the_text_raise(tokens: list, logprobs: list | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_objects("ab", 10, 10, tokens=tokens, logprobs=logprobs)


def test_detected_object_is_immutable() -> None:
    obj = DetectedObject("cat", (0, 0, 1, 1))
    with pytest.raises(AttributeError):
        obj.label = "dog"  # type: ignore[misc]
