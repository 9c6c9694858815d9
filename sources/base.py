"""What every source of inputs can do, whatever kind it is.

An input is one (image, prompt) pair; a source lists or reads them. Each kind of source is a class that can

- `plan` its inputs: the key hashes (rows.keys) of every input, minus those already written, as a `Plan` that
  makes the Ray dataset of the inputs still to do and finds inputs by key (to isolate one that kills a replica);
- give back the image file of an output row (`images`: exports and previews read them);
- name an image's file the way the source names it (`file_names`: exports keep those names);
- write the record `jobs.export` reads back later (`write_record` / `sources.read_record`).

The pipeline never asks which kind it holds.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from storage import Location

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
RECORD = "source.json"


class SourceError(ValueError):
    """A source that cannot be used: a missing folder, an unreadable manifest, duplicate ids. Exit status 2."""


def stable_image_id(relative_path: str) -> int:
    """A positive id below 2**53 (exact in JSON readers that use doubles) from a POSIX relative path."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**53 - 1) + 1


def bytes_image_id(data: bytes) -> int:
    """The id of an image known only by its bytes (a Parquet row without path or id): a hash of the content."""
    digest = hashlib.sha1(data).digest()
    return int.from_bytes(digest[:8], "big") % (2**53 - 1) + 1


class Plan(ABC):
    """The inputs of a run: `expected`, the sorted key hashes of every input of the source; `done`, those already
    in the output (--resume); the dataset of the rest and the inputs behind given keys."""

    def __init__(self, expected: np.ndarray, done: np.ndarray):
        self.expected, self.done = expected, done

    @property
    def total(self) -> int:
        return len(self.expected)

    @property
    def skipped(self) -> int:
        return int(np.isin(self.expected, self.done).sum())

    @abstractmethod
    def dataset(self, batch_size: int, replicas: int):
        """A Ray Dataset of the inputs still to do: rows {image_id, path, prompt[, bytes]}."""

    @abstractmethod
    def inputs(self, keys: np.ndarray) -> list[dict]:
        """The inputs (image_id, path, prompt[, bytes]) whose key hashes are in `keys`: a few, read in the driver."""


class ImageReader(ABC):
    """Row -> the bytes of its image file; a context manager, since some kinds stage images on local disk."""

    @abstractmethod
    def __call__(self, row: dict) -> bytes: ...

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to free
        """Free what reading needed (nothing, by default)."""

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Source(ABC):
    """A source of inputs; see the module docstring. `categories` are a COCO source's ({id, name}), kept so that
    exports and evaluation use the dataset's own category ids."""

    kind: ClassVar[str]
    categories: tuple[dict, ...] = ()
    skipped: dict[str, int] = {}  # what the listing left out and why (a kind that skips nothing keeps {})
    notes: tuple[str, ...] = ()  # lines worth telling the user about the listing

    @abstractmethod
    def every_input_has_a_prompt(self) -> bool:
        """True when every input brings its own prompt, so that the job needs no --task."""

    @abstractmethod
    def plan(self, prompts: Sequence[str], done: np.ndarray, limit: int | None) -> Plan:
        """Every (image, prompt) of the source (an input's own prompt, or each of the job's `prompts`) minus the
        keys in `done`."""

    @abstractmethod
    def images(self, image_ids: np.ndarray) -> ImageReader:
        """A reader of the image files of these images (the ones an export or the previews will ask for)."""

    @abstractmethod
    def file_names(self) -> Callable[[dict], str]:
        """Row -> the image's name as the source gives it (a folder's relative path, a COCO file_name)."""

    @abstractmethod
    def write_record(self, folder: Location) -> None:
        """Write what `read_record` needs to rebuild this source for exports (RECORD, and any file beside it)."""

    def record(self) -> dict:
        """The fields of the record that every kind writes."""
        return {"kind": self.kind, "categories": list(self.categories)}
