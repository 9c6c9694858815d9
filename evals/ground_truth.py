"""Ground-truth files: which kind a file is, and how its records are matched to prediction rows.

Kinds, told apart by shape so that `python -m evals --gt FILE` needs no flag:
- "instances": COCO instances JSON (dict with images, annotations with bbox, categories) -> COCO mAP.
- "captions": COCO captions JSON (dict whose annotations carry `caption`) -> CIDEr.
- "vqa": JSON list of {image_id, question or prompt, answers} (answers as strings or VQAv2 {"answer": ...}).
- "refexp": JSON list of {image_id, prompt or expression or sentence, bbox [x, y, w, h], segmentation (RLE or
  polygons)} -> referring-segmentation mIoU and box accuracy.
- "ocr": JSON list of {image_id, text}.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rows import ImageResolver


def read_json(path: str | Path) -> Any:
    """A JSON file (local path or URI)."""
    from storage import locate

    return json.loads(locate(path).read_bytes())


KINDS = ("instances", "captions", "vqa", "refexp", "ocr")
# A task word (and a language code after answer/question/caption) that starts a prompt and is not the question.
_PROMPT_PREFIX = re.compile(r"^(?:(?:answer|question|caption|describe)\s+\S+\s+|(?:segment|detect)\s+)", re.I)


@dataclass
class GroundTruth:
    kind: str
    data: Any = field(repr=False)
    path: Path | None = None

    def images(self) -> list[Mapping]:
        """COCO `images` for the dict kinds; for the list kinds, one entry per image_id (with file_name if given)."""
        if isinstance(self.data, dict):
            return self.data.get("images", [])
        seen: dict[int, Mapping] = {}
        for rec in self.data:
            seen.setdefault(int(rec["image_id"]), {"id": int(rec["image_id"]), "file_name": rec.get("file_name")})
        return list(seen.values())


def detect_kind(data: Any) -> str:
    """One of KINDS, from the shape of the loaded JSON; ValueError naming the accepted shapes otherwise."""
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        anns = data["annotations"]
        if any("caption" in a for a in anns[:100]):
            return "captions"
        if "categories" in data:
            return "instances"
    if isinstance(data, list) and data and all(isinstance(r, dict) and "image_id" in r for r in data[:100]):
        first = data[0]
        if "answers" in first:
            return "vqa"
        if "segmentation" in first or "bbox" in first:
            return "refexp"
        if "text" in first:
            return "ocr"
    raise ValueError(
        "unrecognized ground truth: expected a COCO instances or captions JSON, or a JSON list of records with "
        "image_id and answers (VQA), segmentation/bbox (referring expressions) or text (OCR)"
    )


def load_ground_truth(path: str | Path) -> GroundTruth:
    data = read_json(path)
    return GroundTruth(detect_kind(data), data, Path(path))


def prompt_key(text: str | None) -> str:
    """What a question/expression is matched on: the prompt without its task word and language, lower case,
    whitespace collapsed ("answer en What color?" and "what color?" give the same key)."""
    text = " ".join((text or "").split())
    return _PROMPT_PREFIX.sub("", text).casefold()


def record_prompt(rec: Mapping) -> str:
    for key in ("prompt", "question", "expression", "sentence", "referring_expression"):
        if rec.get(key):
            return str(rec[key])
    return ""


def answers_of(rec: Mapping) -> list[str]:
    """VQA answers as strings, from either a list of strings or VQAv2's list of {"answer": ...}."""
    return [a["answer"] if isinstance(a, Mapping) else str(a) for a in rec.get("answers", [])]


@dataclass
class Matching:
    """Prediction rows paired with ground-truth records, and what could not be paired."""

    pairs: list[tuple[Mapping, Mapping]]  # (row, record)
    unmatched_rows: int = 0  # predictions with no ground truth
    missing: int = 0  # ground-truth records with no prediction

    def counts(self) -> dict[str, int]:
        return {"matched": len(self.pairs), "unmatched_predictions": self.unmatched_rows, "missing": self.missing}


def match_records(rows: Iterable[Mapping], records: Sequence[Mapping], resolver: ImageResolver) -> Matching:
    """Pair rows with records of the same image: by prompt key first, then, when an image has exactly one
    record left and the row's prompt did not match, that record (a single OCR text or caption per image needs no
    prompt). Each record is used once."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_image[int(rec["image_id"])].append(i)
    used: set[int] = set()
    pairs, unmatched = [], 0
    for row in rows:
        image_id = resolver(row)
        candidates = [i for i in by_image.get(image_id, []) if i not in used] if image_id is not None else []
        key = prompt_key(row.get("prompt"))
        chosen = next((i for i in candidates if prompt_key(record_prompt(records[i])) == key), None)
        if chosen is None and len(by_image.get(image_id, [])) == 1 and candidates:
            chosen = candidates[0]
        if chosen is None:
            unmatched += 1
            continue
        used.add(chosen)
        pairs.append((row, records[chosen]))
    return Matching(pairs, unmatched, len(records) - len(used))
