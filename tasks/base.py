"""What every task shares: the result types and the `Task` protocol (prompt in, typed result out).

A task knows its prompt and how to read the generated text; it knows nothing about Ray or the model. Results
carry the raw text too, because the output row (docs/FORMATS.md) keeps it next to the parsed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from decoders import DetectedObject, ParseReport, parse_objects_with_report, strip_end_tokens
from decoders.scores import span_score
from tasks.detections import Detections

if TYPE_CHECKING:  # masks need torch, imported only where an answer has masks to decode
    from decoders import MaskDecoder


@dataclass(frozen=True)
class TextResult:
    """A caption, description, answer or OCR text: `text` is the answer without special tokens or outer spaces.

    score: exp(mean log-prob) of the tokens of `text`, None when no log-probs were given.
    """

    text: str
    raw: str
    score: float | None = None

    def object_rows(self) -> list[dict]:
        """Text tasks have no objects; present so that every result fills the schema's `objects` column."""
        return []


@dataclass(frozen=True)
class ObjectsResult:
    """Objects found in one image (detect, segment, or a raw prompt that produced `<loc>` tokens).

    masks: bool[H, W] per object aligned with `objects`; None for an object without valid seg tokens or when no
    MaskDecoder was given. classes: the class list of the prompt (empty for a raw prompt).
    """

    raw: str
    width: int
    height: int
    objects: tuple[DetectedObject, ...]
    masks: tuple[np.ndarray | None, ...]
    report: ParseReport = field(repr=False)
    classes: tuple[str, ...] = ()

    def detections(self) -> Detections:
        """Arrays aligned on axis 0; an object without a mask gets an all-False one when any object has a mask."""
        n = len(self.objects)
        mask = None
        if any(m is not None for m in self.masks):
            mask = np.zeros((n, self.height, self.width), dtype=bool)
            for i, m in enumerate(self.masks):
                if m is not None:
                    mask[i] = m
        scores = [o.score for o in self.objects]
        return Detections(
            xyxy=np.array([o.box for o in self.objects], dtype=np.float64).reshape(n, 4),
            mask=mask,
            confidence=None if n == 0 or any(s is None for s in scores) else np.array(scores, dtype=np.float64),
            class_id=np.array([self.classes.index(o.label) if o.label in self.classes else -1 for o in self.objects]),
            labels=np.array([o.label for o in self.objects], dtype=str),
        )

    def object_rows(self) -> list[dict]:
        """One dict per object for the Parquet `objects` column: label, box [x0, y0, x1, y1], score, mask (RLE)."""
        from decoders.masks import mask_to_rle

        return [
            {
                "label": o.label,
                "box": [float(v) for v in o.box],
                "score": o.score,
                "mask": None if m is None else mask_to_rle(m),
            }
            for o, m in zip(self.objects, self.masks, strict=True)
        ]


class _Reader:
    """What every task shares: `parse(text, *, width, height, tokens, logprobs, mask_decoder)`, which reads what
    the model generated into a typed result; each kind of answer has its own `read`."""

    def parse(
        self,
        text: str,
        *,
        width: int | None = None,
        height: int | None = None,
        tokens: Sequence[str] | None = None,
        logprobs: Sequence[float] | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> TextResult | ObjectsResult:
        return self.read(text, width, height, tokens, logprobs, mask_decoder)


class TextTask(_Reader):
    """Base of the tasks whose answer is text: the answer is the generated text without end tokens."""

    kind: ClassVar[str] = "text"

    def read(self, text, width, height, tokens, logprobs, mask_decoder) -> TextResult:
        return parse_text(text, tokens, logprobs)


class ObjectsTask(_Reader):
    """Base of the tasks whose answer is a list of objects (`<loc>` boxes, optional `<seg>` codes, a label); those
    that ask for named classes (detect, segment) have a `classes` field.

    decodes_masks: whether seg codes become masks when a MaskDecoder is given (segment and raw prompts do; detect
    keeps any codes a checkpoint writes on the objects without decoding them).
    """

    kind: ClassVar[str] = "objects"
    decodes_masks: ClassVar[bool] = True

    def read(self, text, width, height, tokens, logprobs, mask_decoder) -> ObjectsResult:
        return parse_objects_result(
            text,
            width=width,
            height=height,
            tokens=tokens,
            logprobs=logprobs,
            mask_decoder=mask_decoder if self.decodes_masks else None,
            classes=getattr(self, "classes", ()),
        )


Task = TextTask | ObjectsTask
"""A task: `prompt()` gives the model's prefix text, `parse(...)` reads what it generated; `name` says which task
and `kind` whether its answer is text (caption, describe, answer, ocr) or objects (detect, segment, raw, the
latter two with the `classes` they asked for, if any)."""


def check_word(value: str, what: str) -> None:
    """A language code or similar prompt word: non-empty, no spaces (it is followed by more prompt text)."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"expected a {what} without spaces (e.g. 'en') but got {value!r}")


def check_line(value: str, what: str) -> None:
    """Free prompt text: non-empty and one line, because the prompt ends at the newline PaliGemma appends."""
    if not value.strip() or "\n" in value:
        raise ValueError(f"expected a non-empty one-line {what} but got {value!r}")


def parse_text(text: str, tokens: Sequence[str] | None = None, logprobs: Sequence[float] | None = None) -> TextResult:
    """Generated text -> TextResult: drops the end-of-text tokens and outer whitespace, scores the rest."""
    body = strip_end_tokens(text)
    start = len(body) - len(body.lstrip())
    stop = len(body.rstrip())
    score = None
    if tokens is not None and logprobs is not None and stop > start:
        score = span_score(tokens, logprobs, start, stop)
    return TextResult(text=body.strip(), raw=text, score=score)


def parse_objects_result(
    text: str,
    *,
    width: int | None,
    height: int | None,
    tokens: Sequence[str] | None,
    logprobs: Sequence[float] | None,
    mask_decoder: MaskDecoder | None,
    classes: tuple[str, ...] = (),
) -> ObjectsResult:
    """Generated text -> ObjectsResult; with a MaskDecoder, every object's seg codes are decoded in one batch."""
    if width is None or height is None:
        raise ValueError("expected the image width and height to place boxes but got None")
    report = parse_objects_with_report(text, width, height, tokens, logprobs)
    objects = tuple(report.objects)
    masks: list[np.ndarray | None] = [None] * len(objects)
    with_codes = [i for i, o in enumerate(objects) if o.seg_tokens is not None]
    if mask_decoder is not None and with_codes:
        from decoders.masks import paste_mask

        raw = mask_decoder.decode(np.array([objects[i].seg_tokens for i in with_codes])).float().cpu()
        for i, r in zip(with_codes, raw, strict=True):
            masks[i] = paste_mask(r, objects[i].box, height, width)
    return ObjectsResult(text, width, height, objects, tuple(masks), report, classes)


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Validated class names for a detect/segment prompt; a name cannot hold the grammar's ';', '<', '>'."""
    if isinstance(classes, str):
        raise ValueError(f"expected a list of class names but got the string {classes!r} (see parse_classes)")
    names = tuple(c.strip() for c in classes)
    if not names:
        raise ValueError("expected at least one class name but got none")
    for name in names:
        if not name or any(c in name for c in ";<>\n"):
            raise ValueError(f"expected class names without ';', '<', '>' or newlines but got {name!r}")
    return names
