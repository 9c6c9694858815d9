"""Pipeline output rows (DESIGN.md §7) -> COCO results, and the small readers evaluation needs around them.

Kept here, not in the pipeline, because both sides need the same conversion: the pipeline to export COCO JSON,
evals to score it. A row is a dict with image_id, path, width, height, task, prompt, text, objects (list of
{label, box [x0, y0, x1, y1] pixels, score, mask {size [h, w], counts} or None}), error, model, seconds.

Labels are matched to categories by name, case-insensitively and with runs of spaces collapsed, because the model
writes the class names it was prompted with but not always in the dataset's capitalization. A label that matches
no category is dropped and counted, as are rows whose `error` is set: nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The model's raw text keeps special tokens; these trail an answer and are not part of it.
_END_TOKENS = re.compile(r"(?:\s*(?:<eos>|<pad>|<end_of_turn>))+\s*$")


def label_key(label: str) -> str:
    """The form labels and category names are compared in: case-folded, inner whitespace collapsed."""
    return " ".join(label.casefold().split())


def category_ids(categories: Sequence[Mapping] | Mapping[str, int]) -> dict[str, int]:
    """label_key(name) -> category id, from COCO `categories` or a plain name -> id mapping."""
    if isinstance(categories, Mapping):
        return {label_key(name): int(cid) for name, cid in categories.items()}
    return {label_key(c["name"]): int(c["id"]) for c in categories}


def clean_text(raw: str | None) -> str:
    """The answer in a row's raw `text`: trailing <eos>/<pad>/<end_of_turn> and outer whitespace removed."""
    if raw is None:
        return ""
    end = _END_TOKENS.search(raw)
    return (raw[: end.start()] if end else raw).strip()


@dataclass
class ConversionReport:
    """Counts of what `rows_to_coco_results` kept and dropped."""

    rows: int = 0
    error_rows: int = 0
    objects: int = 0
    results: int = 0
    masks: int = 0
    unmatched_images: int = 0  # rows whose image is not in the ground truth (by id or file name)
    unknown_labels: Counter = field(default_factory=Counter)  # label -> objects dropped

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "unknown_labels"}
        out["unknown_labels"] = dict(self.unknown_labels.most_common())
        return out


class ImageResolver:
    """Maps a row to a ground-truth image id: by `image_id` when the ground truth has it, else by file name.

    The fallback exists because a run over a plain folder numbers images itself; the file name still ties the row
    to the annotation.
    """

    def __init__(self, images: Iterable[Mapping]):
        self.ids: set[int] = set()
        self.by_name: dict[str, int] = {}
        for img in images:
            self.ids.add(int(img["id"]))
            if img.get("file_name"):
                self.by_name[Path(str(img["file_name"])).name] = int(img["id"])

    def __call__(self, row: Mapping) -> int | None:
        image_id = row.get("image_id")
        if image_id is not None and int(image_id) in self.ids:
            return int(image_id)
        path = row.get("path")
        return self.by_name.get(Path(str(path)).name) if path else None


def object_to_result(obj: Mapping, image_id: int, category_id: int) -> dict:
    """One object -> one COCO result: bbox [x, y, w, h], score (1.0 when the row has none), RLE when present."""
    x0, y0, x1, y1 = (float(v) for v in obj["box"])
    score = obj.get("score")
    result = {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "score": 1.0 if score is None else float(score),
    }
    mask = obj.get("mask")
    if mask is not None:
        counts = mask["counts"]
        result["segmentation"] = {
            "size": [int(v) for v in mask["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    return result


def rows_to_coco_results(
    rows: Iterable[Mapping],
    categories: Sequence[Mapping] | Mapping[str, int],
    resolve: ImageResolver | None = None,
) -> tuple[list[dict], ConversionReport]:
    """COCO results for every object of every successful row, and a report of what was dropped.

    resolve: maps rows to ground-truth image ids (rows it cannot map are counted and skipped); None keeps each
    row's own `image_id`, as an export without ground truth does.
    """
    ids = category_ids(categories)
    report = ConversionReport()
    results = []
    for row in rows:
        report.rows += 1
        if row.get("error"):
            report.error_rows += 1
            continue
        image_id = resolve(row) if resolve is not None else row.get("image_id")
        if image_id is None:
            report.unmatched_images += 1
            continue
        for obj in row.get("objects") or ():
            report.objects += 1
            category_id = ids.get(label_key(obj["label"]))
            if category_id is None:
                report.unknown_labels[obj["label"]] += 1
                continue
            result = object_to_result(obj, image_id, category_id)
            report.masks += "segmentation" in result
            results.append(result)
    report.results = len(results)
    return results, report


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet part files of an output folder (searched recursively, sorted), or [path] for one file.

    Names starting with "." or "_" are skipped, as Parquet dataset readers skip them: the pipeline writes a part
    under a hidden name and renames it when complete, so a hidden file may be half written.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    hidden = (".", "_")
    files = (p for p in path.rglob("*.parquet") if p.is_file())
    return sorted(p for p in files if not any(part.startswith(hidden) for part in p.relative_to(path).parts))


def read_rows(path: str | Path) -> list[dict]:
    """All rows of the Parquet part files under `path`, as dicts (objects as lists of dicts)."""
    import pyarrow.parquet as pq

    files = parquet_files(path)
    if not files:
        raise FileNotFoundError(f"no .parquet files under {path}")
    rows: list[dict] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
