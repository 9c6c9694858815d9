"""Items (images with objects, from any reader) -> training records: prompts, answers, splits, files.

A record is what `jobs.finetune` reads: `image` (a path relative to the records file, or a URI), `prefix` (the
prompt) and `suffix` (the answer), plus `task`, `width`, `height` and `objects` (the answer's objects with their
box and, for segment records, their mask as COCO RLE) so that augmentation can move them and write the answer
again. Every answer is written by `decoders.format_object`, the exact inverse of the parser that reads the
model's output.

Decisions, each an option of `jobs.make_records`:
- **classes**: `--classes "person=pedestrian ; car"` keeps person (renamed pedestrian) and car and drops every
  other label; without it every label is kept, in the order first seen.
- **prompts**: one record per image whose prompt lists every class (`detect a ; b ; c`, the answer listing the
  objects of all of them, empty when the image has none), or with `--per-class` one record per class present
  (`detect a`) plus, for each absent class, a negative record (empty answer) with probability
  `--negative-share` (default 0.1: enough that the model keeps saying "none", few enough that it does not learn
  to say it for everything; the shapes model's probes showed what too many empty answers do).
- **subsets** (`--subsets N`): N more records per image whose prompt names a random subset of the classes
  (each with probability 1/2, at least one; in the class list's order), the answer listing those classes'
  objects. A model tuned on one prompt forgets how to answer others (a model asked only `detect a ; b ; c ; d`
  no longer answers `detect a ; b ; c` well); PaliGemma's own detection data mixes class lists the same way.
- **order** of the objects in an answer: `class` (default: the prompt's class order, then top to bottom and left
  to right, as the shapes data and big_vision's detection targets are sorted), `position` (top to bottom, left to
  right, any class), `source` (as in the file), `random` (written in class order and marked `shuffle`, so that
  the trainer reshuffles them every epoch).
- **masks** (segment): cropped to the object's box, resized to 64 x 64 and encoded by the VQ-VAE's encoder
  (`--vae`) into the 16 nearest codebook entries (decoders.vqvae.MaskEncoder): the inverse of the decoder that
  turns `<seg>` tokens into masks. An object without a mask cannot be segmented, so a segment record that would
  need one is left out and counted.
- **split** by image (`--val-share F --seed S`): every record of an image lands in the same file, so the
  validation set never holds an image the model trained on.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from records.base import Item, Obj, Problems
from storage import is_uri
from tasks import CLASS_TASKS

ORDERS = ("class", "position", "source", "random")


def parse_class_map(text: str | None) -> dict[str, str] | None:
    """'person=pedestrian ; car' -> {'person': 'pedestrian', 'car': 'car'} (keys compared case-folded)."""
    if not text or not text.strip():
        return None
    from rows import label_key

    out: dict[str, str] = {}
    for entry in text.split(";"):
        if not entry.strip():
            continue
        source, _, target = entry.partition("=")
        source, target = source.strip(), (target.strip() or source.strip())
        if not source:
            raise ValueError(f"--classes: expected NAME or NAME=NEW entries separated by ';', got {entry.strip()!r}")
        out[label_key(source)] = target
    return out


@dataclass(frozen=True)
class RecordOptions:
    """How items become records (see the module docstring)."""

    task: str = "detect"
    classes: dict[str, str] | None = None
    per_class: bool = False
    negative_share: float = 0.1
    order: str = "class"
    seed: int = 0
    subsets: int = 0

    def __post_init__(self) -> None:
        if self.task not in CLASS_TASKS:  # the tasks a record can train
            raise ValueError(f"--task must be one of {', '.join(CLASS_TASKS)}, got {self.task!r}")
        if self.order not in ORDERS:
            raise ValueError(f"--order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if not 0.0 <= self.negative_share <= 1.0:
            raise ValueError(f"--negative-share must be a number in [0, 1], got {self.negative_share}")
        if self.subsets < 0:
            raise ValueError(f"--subsets must be at least 0, got {self.subsets}")


@dataclass
class Built:
    """Records of one image, and the tallies the job reports."""

    records: list[dict] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def _labelled(item: Item, options: RecordOptions, problems: Problems, stats: Counter) -> list[Obj]:
    """The item's objects with the class map applied (dropped classes counted, not a problem)."""
    from rows import label_key

    kept = []
    for obj in item.objects:
        if item.expression is None:
            if options.classes is not None:
                if label_key(obj.label) not in options.classes:
                    stats["objects of dropped classes"] += 1
                    continue
                obj = Obj(options.classes[label_key(obj.label)], obj.box, obj.mask)
            obj = Obj(obj.label.strip(), obj.box, obj.mask)
            if not obj.label or any(c in obj.label for c in ";<>"):  # the answer grammar's separators
                problems.add("label empty or with ';', '<' or '>'", f"{item.image}: {obj.label!r}")
                continue
        kept.append(obj)
    return kept


def ordered(objects: Sequence[Obj], classes: Sequence[str], order: str) -> list[Obj]:
    """The answer's object order (see the module docstring)."""

    def position(o: Obj):
        return (o.box[1], o.box[0])

    if order == "source":
        return list(objects)
    if order == "position":
        return sorted(objects, key=position)
    rank = {c: i for i, c in enumerate(classes)}
    return sorted(objects, key=lambda o: (rank.get(o.label, len(rank)), *position(o)))


class RecordBuilder:
    """Turns items into records one image at a time; holds the class list seen so far and the mask encoder."""

    def __init__(self, options: RecordOptions, encoder=None, all_classes: Sequence[str] = ()):
        if options.task == "segment" and encoder is None:
            raise ValueError("--task segment encodes masks into <seg> tokens: give the VQ-VAE with --vae")
        self.options, self.encoder = options, encoder
        self.classes = list(all_classes)
        self.rng = np.random.default_rng(options.seed)

    def class_list(self, items: Sequence[Item]) -> list[str]:
        """Every class of the dataset: the source's own order (COCO's categories, YOLO's names), then labels in the
        order first seen; with a class map, the classes it keeps in its order. The all-classes prompt lists them."""
        seen: dict[str, None] = dict.fromkeys(self.classes)
        for item in items:
            if item.expression is None:
                for obj in _labelled(item, self.options, Problems(), Counter()):
                    seen.setdefault(obj.label)
        if self.options.classes is not None:  # only what the map keeps, in its order
            seen = dict.fromkeys(self.options.classes.values())
        self.classes = list(seen)
        return self.classes

    def build(self, item: Item, problems: Problems) -> Built:
        out = Built()
        objects = _labelled(item, self.options, problems, out.stats)
        task = self.options.task
        if item.expression is not None:
            prompts = [(f"{task} {item.expression}", [], objects)]
        elif self.options.per_class:
            prompts = []
            for c in self.classes:
                mine = [o for o in objects if o.label == c]
                if mine or self.rng.random() < self.options.negative_share:
                    prompts.append((f"{task} {c}", [c], mine))
        else:
            prompts = [(f"{task} " + " ; ".join(self.classes), self.classes, objects)] if self.classes else []
        if item.expression is None and self.classes:
            for _ in range(self.options.subsets):
                chosen = [c for c in self.classes if self.rng.random() < 0.5]
                chosen = chosen or [self.classes[int(self.rng.integers(len(self.classes)))]]
                prompts.append((f"{task} " + " ; ".join(chosen), chosen, [o for o in objects if o.label in chosen]))
        for prefix, classes, mine in prompts:
            record = self._record(item, prefix, classes, mine, problems)
            if record is not None:
                out.records.append(record)
                out.stats["records"] += 1
                out.stats["objects"] += len(mine)
                out.stats["negative records"] += not mine
        return out

    def _record(self, item: Item, prefix: str, classes, objects: list[Obj], problems: Problems) -> dict | None:
        from decoders import format_object, mask_to_rle

        task = self.options.task
        objects = ordered(objects, classes, "position" if item.expression is not None else self.options.order)
        codes: list[list[int] | None] = [None] * len(objects)
        if task == "segment" and objects:
            if any(o.mask is None for o in objects):
                problems.add("segment record left out: an object has no mask", f"{item.image} ({prefix})")
                return None
            codes = encode_masks(self.encoder, objects)
        suffix = " ; ".join(
            format_object(o.box, item.width, item.height, o.label, c) for o, c in zip(objects, codes, strict=True)
        )
        kept = [
            {"label": o.label, "box": [round(v, 3) for v in o.box], "mask": mask_to_rle(o.mask) if codes[0] else None}
            for o in objects
        ]
        record = {"image": item.image, "prefix": prefix, "suffix": suffix, "task": task,
                  "width": item.width, "height": item.height, "objects": kept}  # fmt: skip
        if self.options.order == "random" and item.expression is None:
            record["shuffle"] = True
        return record


def encode_masks(encoder, objects: Sequence[Obj]) -> list[list[int]]:
    """The 16 VQ-VAE codes of each object's mask, cropped to its box (as big_vision builds segment targets)."""
    import torch

    from decoders.masks import crop_to_box

    crops = torch.stack([crop_to_box(o.mask, o.box) for o in objects])
    return encoder.encode(crops).tolist()


def split_by_image(items: Sequence[Item], val_share: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(train, validation): a seeded shuffle of the images, the first round(share * n) going to validation."""
    if not val_share:
        return list(items), []
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = int(round(val_share * len(items)))
    chosen = set(order[:n_val].tolist())
    return [it for i, it in enumerate(items) if i not in chosen], [it for i, it in enumerate(items) if i in chosen]


def relative_image(path: str, folder: Path) -> str:
    """An image path as a records file at `folder` stores it: relative to the file (a URI as it is)."""
    if is_uri(path):
        return path
    return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))


def write_records(records: Sequence[dict], path: str | Path) -> Path:
    """Write records as JSONL (one JSON object a line) or Parquet (objects as a JSON string column), with image
    paths made relative to the file's folder."""
    path = Path(path)
    rows = [r | {"image": relative_image(r["image"], path.parent)} for r in records]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([r | {"objects": json.dumps(r["objects"]), "shuffle": bool(r.get("shuffle"))}
                                      for r in rows])  # fmt: skip
        pq.write_table(table, path)
    else:
        with path.open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return path
