"""PaliGemma's object grammar: `<loc>` tokens to pixel boxes and back (docs/FORMATS.md).

One object is 4 `<locNNNN>` tokens (y_min, x_min, y_max, x_max), optionally 16 `<segNNN>` tokens, then a space and
a label; objects are separated by " ; ". The parser never raises on model output: a malformed group is dropped or
repaired and the reason is counted in a `ParseReport`, because a batch job over a million images must not stop on
one odd answer, and because the counts tell whether a checkpoint or a prompt is broken.

Coordinate convention: index = round(v * 1023), v = index / 1023 (v normalized to the whole squashed image).
This is what big_vision used to build the training targets of the released checkpoints, so it is the unbiased
inverse of what the model learned: `<loc1023>` is the image edge, and `encode(decode(i)) == i` for every index.
Google's notebooks and supervision divide by 1024 instead; the two differ by at most one bin (width / 1024 px).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from decoders.scores import span_score

NUM_LOC_BINS = 1024
NUM_SEG_CODES = 128
SEGS_PER_OBJECT = 16
SEPARATOR = " ; "

_LOC = re.compile(r"<loc(\d+)>")
_SEG = re.compile(r"<seg(\d+)>")
# A run of special tokens other than loc/seg at the very end (e.g. "<eos>", "<pad><pad>"): generate keeps them.
_TRAILING_SPECIALS = re.compile(r"(?:\s*<(?!loc\d|seg\d)[^<>;]*>)+\s*$")
_LOC_RUN = re.compile(r"(?:<loc\d+>)+")
_SEG_RUN = re.compile(r"(?:<seg\d+>)+")


@dataclass(frozen=True)
class DetectedObject:
    """One object parsed from generated text.

    box: (x0, y0, x1, y1) in pixels of the original image, x0 < x1 and y0 < y1.
    seg_tokens: the 16 `<seg>` codes (0..127) in raster order, or None for a box-only object.
    score: exp(mean log-probability) of the object's tokens, or None when no log-probabilities were given.
    span: (start, end) character offsets of the object (first `<loc` to the end of the label) in the text.
    """

    label: str
    box: tuple[float, float, float, float]
    seg_tokens: tuple[int, ...] | None = None
    score: float | None = None
    span: tuple[int, int] = (0, 0)


@dataclass
class ParseReport:
    """What the parser kept, dropped and repaired, with a count per reason.

    dropped: empty_group ("a ; ; b"), no_locs (plain text), locs_not_first (text before the tokens), too_few_locs,
    too_many_locs, loc_out_of_range (index past 1023), tokens_in_label, empty_box (zero width or height).
    repaired: swapped_corners (reversed corners swapped); too_few_segs, too_many_segs, seg_out_of_range (box kept,
    mask dropped).
    """

    objects: list[DetectedObject] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        """True when nothing was dropped or repaired."""
        return not self.dropped and not self.repaired


def loc_to_coord(index: int) -> float:
    """Bin index (0..1023) -> normalized coordinate in [0, 1]."""
    return index / (NUM_LOC_BINS - 1)


def coord_to_loc(value: float) -> int:
    """Normalized coordinate -> bin index, clipped to 0..1023 (values outside the image land on the edge)."""
    return min(max(round(value * (NUM_LOC_BINS - 1)), 0), NUM_LOC_BINS - 1)


def format_object(
    box: Sequence[float],
    width: int,
    height: int,
    label: str = "",
    seg_tokens: Sequence[int] | None = None,
) -> str:
    """One object as PaliGemma writes it; the exact inverse of the parser (training targets).

    box: (x0, y0, x1, y1) in pixels. An empty label writes no trailing space (big_vision's referring-segmentation
    targets are locs and segs only).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"expected a positive image size but got width={width}, height={height}")
    _check_label(label)
    x0, y0, x1, y1 = box
    locs = (coord_to_loc(y0 / height), coord_to_loc(x0 / width), coord_to_loc(y1 / height), coord_to_loc(x1 / width))
    text = "".join(f"<loc{i:04d}>" for i in locs)
    if seg_tokens is not None:
        if len(seg_tokens) != SEGS_PER_OBJECT or not all(0 <= int(s) < NUM_SEG_CODES for s in seg_tokens):
            raise ValueError(f"expected {SEGS_PER_OBJECT} seg codes in 0..{NUM_SEG_CODES - 1} but got {seg_tokens}")
        text += "".join(f"<seg{int(s):03d}>" for s in seg_tokens)
    return f"{text} {label}" if label else text


def encode_objects(objects: Sequence[DetectedObject], width: int, height: int) -> str:
    """Objects -> the text the model should generate for them (objects joined with " ; ")."""
    return SEPARATOR.join(format_object(o.box, width, height, o.label, o.seg_tokens) for o in objects)


def _check_label(label: str) -> None:
    if any(c in label for c in ";<>") or label != label.strip():
        raise ValueError(f"expected a label without ';', '<', '>' or outer spaces but got {label!r}")


def strip_end_tokens(text: str | None) -> str:
    """The generated text without the special tokens that trail it (`<eos>`, `<pad>`, `<end_of_turn>`, any other
    `<...>` but `<loc>`/`<seg>`) and the spaces around them: generate keeps special tokens in its text, since
    object answers are written in them."""
    if text is None:
        return ""
    trailing = _TRAILING_SPECIALS.search(text)
    return text[: trailing.start()] if trailing else text


def parse_objects(
    text: str,
    width: int,
    height: int,
    tokens: Sequence[str] | None = None,
    logprobs: Sequence[float] | None = None,
) -> list[DetectedObject]:
    """Generated text -> objects with pixel boxes. Never raises on malformed text; see `parse_objects_with_report`."""
    return parse_objects_with_report(text, width, height, tokens, logprobs).objects


def parse_objects_with_report(
    text: str,
    width: int,
    height: int,
    tokens: Sequence[str] | None = None,
    logprobs: Sequence[float] | None = None,
) -> ParseReport:
    """Generated text -> a `ParseReport` holding the objects and the counted reasons for drops and repairs.

    tokens/logprobs: the generated token pieces (``"".join(tokens) == text``) and their natural-log probabilities;
    when given, each object's score is exp(mean log-prob) of the tokens overlapping its span, else None.
    Decisions: a group with fewer or more than 4 locs, an index past 1023, a zero-size box or text around the
    tokens is dropped; reversed corners (y_max < y_min) are swapped (the model wrote a valid region in the wrong
    order); a wrong seg count or a seg code past 127 keeps the box and drops the mask.
    Raises ValueError only for a caller error: tokens that do not join to text, or tokens/logprobs of unequal length.
    """
    if (tokens is None) != (logprobs is None):
        raise ValueError("expected tokens and logprobs together but got only one of them")
    if tokens is not None and logprobs is not None:
        if len(tokens) != len(logprobs):
            raise ValueError(f"expected one logprob per token but got {len(tokens)} tokens, {len(logprobs)} logprobs")
        if "".join(tokens) != text:
            raise ValueError("expected tokens that join to the text exactly but they differ")
    report = ParseReport()
    if width <= 0 or height <= 0:
        raise ValueError(f"expected a positive image size but got width={width}, height={height}")
    body_end = len(strip_end_tokens(text))
    if not text[:body_end].strip():
        return report  # empty output (or only end tokens): no objects, nothing malformed
    start = 0
    while start <= body_end:
        end = text.find(";", start, body_end)
        end = body_end if end < 0 else end
        _parse_group(text, start, end, width, height, tokens, logprobs, report)
        start = end + 1
    return report


def _parse_group(
    text: str,
    start: int,
    end: int,
    width: int,
    height: int,
    tokens: Sequence[str] | None,
    logprobs: Sequence[float] | None,
    report: ParseReport,
) -> None:
    """Parse text[start:end] (one group between separators) and record the object or the reason it was dropped."""
    group = text[start:end]
    stripped = group.strip()
    if not stripped:  # e.g. "a ; ; b" or a trailing " ; "
        report.dropped["empty_group"] += 1
        return
    g0 = start + len(group) - len(group.lstrip())  # span of the stripped group in text
    g1 = g0 + len(stripped)
    locs_run = _LOC_RUN.match(stripped)
    if locs_run is None:
        report.dropped["locs_not_first" if _LOC.search(stripped) else "no_locs"] += 1
        return
    locs = [int(m) for m in _LOC.findall(locs_run.group())]
    rest = stripped[locs_run.end() :]
    segs_run = _SEG_RUN.match(rest)
    segs = [int(m) for m in _SEG.findall(segs_run.group())] if segs_run else []
    label = rest[segs_run.end() :] if segs_run else rest
    if len(locs) < 4:
        report.dropped["too_few_locs"] += 1
        return
    if len(locs) > 4:
        report.dropped["too_many_locs"] += 1
        return
    if any(i >= NUM_LOC_BINS for i in locs):
        report.dropped["loc_out_of_range"] += 1
        return
    if "<" in label or ">" in label:  # tokens after the label, or locs/segs interleaved with text
        report.dropped["tokens_in_label"] += 1
        return
    y0, x0, y1, x1 = locs
    if y0 == y1 or x0 == x1:
        report.dropped["empty_box"] += 1
        return
    if y1 < y0 or x1 < x0:
        y0, y1 = min(y0, y1), max(y0, y1)
        x0, x1 = min(x0, x1), max(x0, x1)
        report.repaired["swapped_corners"] += 1
    seg_tokens: tuple[int, ...] | None = None
    if segs:
        if len(segs) != SEGS_PER_OBJECT:
            report.repaired["too_few_segs" if len(segs) < SEGS_PER_OBJECT else "too_many_segs"] += 1
        elif any(s >= NUM_SEG_CODES for s in segs):
            report.repaired["seg_out_of_range"] += 1
        else:
            seg_tokens = tuple(segs)
    box = (loc_to_coord(x0) * width, loc_to_coord(y0) * height, loc_to_coord(x1) * width, loc_to_coord(y1) * height)
    score = span_score(tokens, logprobs, g0, g1) if tokens is not None and logprobs is not None else None
    report.objects.append(DetectedObject(label.strip(), box, seg_tokens, score, (g0, g1)))
