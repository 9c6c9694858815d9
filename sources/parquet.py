"""A Parquet dataset whose rows carry the images (what Hugging Face `datasets` writes) as pipeline inputs.

Ray Data reads the dataset in its own tasks, so the driver never holds the images, nor a list of them. An input's
image id is the row's `image_id` column when there is one, a hash of the image struct's `path` when it has one,
and a hash of the image bytes otherwise; its prompt is the row's `prompt` when set, each of the job's prompts
otherwise. A row's `path` names where the image came from: the struct's path, or `DATASET#image_id=N`.

Images for exports and previews are read back in one pass over the dataset (`StagedImages`): the images asked
for are written to a local folder as the dataset streams by, then read from there, so exporting N rows reads
the dataset once instead of once per row.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rows.keys import key_hashes
from sources.base import RECORD, ImageReader, Plan, Source, bytes_image_id, stable_image_id
from storage import Location, locate

INPUT_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("path", pa.string()), ("prompt", pa.string()), ("bytes", pa.binary())]
)


@dataclass(frozen=True)
class ParquetSource(Source):
    """location: the dataset (file, folder or URI); image_column: the column of images (bytes, or a {bytes,
    path} struct); columns: the dataset's columns."""

    location: str
    image_column: str = "image"
    columns: tuple[str, ...] = ()
    kind = "parquet"

    def _dataset(self):
        import pyarrow.dataset as pads

        loc = locate(self.location)
        return pads.dataset(loc.path, filesystem=loc.fs, format="parquet")

    def _read_columns(self) -> list[str]:
        return [c for c in (self.image_column, "image_id", "prompt") if c in self.columns]

    def every_input_has_a_prompt(self) -> bool:
        if "prompt" not in self.columns:
            return False
        return self._dataset().count_rows(filter=pc.field("prompt").is_null()) == 0

    def scan(self, prompts: Sequence[str], limit: int | None, batch_size: int = 4096) -> Iterator[list[dict]]:
        """The inputs of the first `limit` dataset rows, a record batch at a time, in the driver."""
        seen = 0
        for record_batch in self._dataset().to_batches(columns=self._read_columns(), batch_size=batch_size):
            if limit is not None and seen >= limit:
                break
            if limit is not None:
                record_batch = record_batch.slice(0, limit - seen)
            seen += record_batch.num_rows
            yield expand(record_batch.to_pydict(), self, prompts)

    def plan(self, prompts: Sequence[str], done: np.ndarray, limit: int | None) -> ParquetPlan:
        """Key hashes of every input (the image bytes are read only when neither an image_id column nor image
        paths name the images); the inputs themselves stay in the dataset until Ray reads them."""
        hashes = [key_hashes([r["image_id"] for r in rows], [r["prompt"] for r in rows])
                  for rows in self.scan(prompts, limit)]  # fmt: skip
        expected = np.unique(np.concatenate(hashes)) if hashes else np.empty(0, np.int64)
        return ParquetPlan(self, list(prompts), limit, expected, done)

    def images(self, image_ids: np.ndarray) -> ImageReader:
        return StagedImages(self, image_ids)

    def file_names(self) -> Callable[[dict], str]:
        return lambda row: row["path"]

    def write_record(self, folder: Location) -> None:
        record = self.record() | {"location": self.location, "image_column": self.image_column,
                                  "columns": list(self.columns)}  # fmt: skip
        folder.join(RECORD).write_text(json.dumps(record, ensure_ascii=False))

    @classmethod
    def from_record(cls, record: dict, folder: Location) -> ParquetSource:
        return cls(record["location"], record["image_column"], tuple(record.get("columns", ())))


class ParquetPlan(Plan):
    def __init__(self, source: ParquetSource, prompts: list[str], limit: int | None, expected, done):
        super().__init__(expected, done)
        self.source, self.prompts, self.limit = source, prompts, limit

    def dataset(self, batch_size: int, replicas: int):
        import ray

        loc = locate(self.source.location)
        ds = ray.data.read_parquet(loc.path, filesystem=loc.fs, columns=self.source._read_columns())
        if self.limit is not None:
            ds = ds.limit(self.limit)
        return ds.map_batches(
            _expand_and_skip,
            fn_kwargs={"source": self.source, "prompts": self.prompts, "done": self.done},
            batch_format="pyarrow",
            num_cpus=0.25,
        )

    def inputs(self, keys: np.ndarray) -> list[dict]:
        found = []
        for rows in self.source.scan(self.prompts, self.limit, batch_size=1024):
            hashes = key_hashes([r["image_id"] for r in rows], [r["prompt"] for r in rows])
            found += [r for r, hit in zip(rows, np.isin(hashes, keys), strict=True) if hit]
        return found


class StagedImages(ImageReader):
    """The images of some image ids, staged on local disk in one pass over the dataset at the first read."""

    def __init__(self, source: ParquetSource, image_ids: np.ndarray):
        self.source, self.wanted = source, np.unique(np.asarray(image_ids, np.int64))
        self.folder: str | None = None

    def _stage(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="staged-images-")
        columns = [c for c in (self.source.image_column, "image_id") if c in self.source.columns]
        for record_batch in self.source._dataset().to_batches(columns=columns, batch_size=1024):
            batch = record_batch.to_pydict()
            ids, _ = _ids_and_paths(batch, self.source)
            for image_id, image, hit in zip(ids, batch[self.source.image_column], np.isin(ids, self.wanted),
                                            strict=True):  # fmt: skip
                path = os.path.join(self.folder, str(image_id))
                if hit and not os.path.exists(path):
                    with open(path, "wb") as f:
                        f.write(image["bytes"] if isinstance(image, dict) else image)

    def __call__(self, row: dict) -> bytes:
        if self.folder is None:
            self._stage()
        with open(os.path.join(self.folder, str(int(row["image_id"]))), "rb") as f:
            return f.read()

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _ids_and_paths(batch: dict, source: ParquetSource) -> tuple[list[int], list[str]]:
    images = batch[source.image_column]
    n = len(images)
    is_struct = n and isinstance(images[0], dict)
    struct_paths = [im.get("path") if is_struct else None for im in images]
    given = batch.get("image_id")
    ids, paths = [], []
    for i in range(n):
        path = struct_paths[i]
        if given is not None and given[i] is not None:
            image_id = int(given[i])
        elif path:
            image_id = stable_image_id(str(path))
        else:
            data = images[i]["bytes"] if is_struct else images[i]
            image_id = bytes_image_id(bytes(data))
        ids.append(image_id)
        paths.append(str(path) if path else f"{source.location}#image_id={image_id}")
    return ids, paths


def expand(batch: dict, source: ParquetSource, prompts: Sequence[str]) -> list[dict]:
    """Dataset rows -> inputs {image_id, path, prompt, bytes}: one per prompt (the row's own, or each job prompt)."""
    ids, paths = _ids_and_paths(batch, source)
    own = batch.get("prompt")
    out = []
    for i, image in enumerate(batch[source.image_column]):
        data = image["bytes"] if isinstance(image, dict) else image
        row_prompts = [own[i]] if own is not None and own[i] else prompts
        for prompt in row_prompts:
            out.append({"image_id": ids[i], "path": paths[i], "prompt": prompt, "bytes": data})
    return out


def _expand_and_skip(batch: pa.Table, source: ParquetSource, prompts: list[str], done: np.ndarray) -> pa.Table:
    rows = expand(batch.to_pydict(), source, prompts)
    if len(done):
        hashes = key_hashes([r["image_id"] for r in rows], [r["prompt"] for r in rows])
        rows = [r for r, skip in zip(rows, np.isin(hashes, done), strict=True) if not skip]
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)
