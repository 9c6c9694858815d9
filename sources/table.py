"""A source listed before any work starts: an image folder, a COCO file's images, a Parquet/CSV manifest.

The listing (sources/listing.py) is one compact Arrow table, ITEM_SCHEMA (`image_id`, `path`, `file_name`,
`prompt`): a bad argument fails at once with a clear message, `--resume` subtracts what is written, and a million
inputs cost tens of megabytes, not a list of Python objects. The table goes to Ray as blocks of whole batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rows.keys import table_key_hashes
from sources.base import RECORD, ImageReader, Plan, Source
from storage import Location, read_bytes

ITEM_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("path", pa.string()), ("file_name", pa.string()), ("prompt", pa.string())]
)
ITEMS_FILE = "source-items.parquet"


def input_blocks(inputs: pa.Table, batch_size: int, replicas: int) -> list[pa.Table]:
    """The inputs as Arrow tables of a whole number of batches each, one Ray block per table.

    A block that is not a multiple of the batch size makes a short batch (blocks of 12 at batch size 8 run as
    8 + 4, wasting a third of the work), and a replica's rows reach the driver a block at a time. So blocks hold
    1 to 16 batches: enough blocks to keep every replica busy (8 per replica), few enough for small overheads.
    """
    per_replica = math.ceil(inputs.num_rows / (batch_size * 8 * replicas))
    size = batch_size * max(1, min(16, per_replica))
    return [inputs.slice(i, size) for i in range(0, inputs.num_rows, size)]


class TablePlan(Plan):
    """`todo`: the (image_id, path, prompt) rows still to label, image by image."""

    def __init__(self, todo: pa.Table, expected: np.ndarray, done: np.ndarray):
        super().__init__(expected, done)
        self.todo = todo

    def dataset(self, batch_size: int, replicas: int):
        import ray

        return ray.data.from_arrow(input_blocks(self.todo, batch_size, replicas))

    def inputs(self, keys: np.ndarray) -> list[dict]:
        hashes = table_key_hashes(self.todo)
        return self.todo.filter(pa.array(np.isin(hashes, keys))).to_pylist()


class FileReader(ImageReader):
    """Reads each row's own path (local or URI)."""

    def __call__(self, row: dict) -> bytes:
        return read_bytes(row["path"])


class FileNames:
    """image_id -> the source's file name, looked up in the listing's Arrow table (no dict of a million entries);
    a row of an image the listing does not know keeps its path."""

    def __init__(self, items: pa.Table):
        ids = items["image_id"].to_numpy()
        self.order = np.argsort(ids, kind="stable")
        self.ids, self.names = ids[self.order], items["file_name"]

    def __call__(self, row: dict) -> str:
        i = int(np.searchsorted(self.ids, row["image_id"]))
        if i < len(self.ids) and self.ids[i] == row["image_id"]:
            return self.names[int(self.order[i])].as_py()
        return row["path"]


@dataclass(frozen=True)
class TableSource(Source):
    """items: ITEM_SCHEMA rows (a null prompt means the job's prompts); kind: folder, coco or manifest; skipped:
    what the listing left out and why (counts); notes: lines worth telling the user (a link loop and its path)."""

    kind: str
    items: pa.Table
    categories: tuple[dict, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.items.num_rows

    def every_input_has_a_prompt(self) -> bool:
        return self.items.num_rows > 0 and self.items["prompt"].null_count == 0

    def plan(self, prompts: Sequence[str], done: np.ndarray, limit: int | None) -> TablePlan:
        """A row's own prompt wins over the job's. Rows of one image stay together (image-major order): a batch
        then holds an image's prompts side by side, and the replica runs the vision tower once for them."""
        items = self.items.slice(0, limit) if limit else self.items
        step = len(prompts) + 1
        items = items.append_column("_order", pa.array(np.arange(items.num_rows, dtype=np.int64) * step))
        own = items.filter(pc.is_valid(items["prompt"]))
        parts = [own.select(["image_id", "path", "prompt", "_order"])]
        without = items.filter(pc.is_null(items["prompt"])).select(["image_id", "path", "_order"])
        for n, prompt in enumerate(prompts, start=1):
            if without.num_rows:
                parts.append(pa.table({"image_id": without["image_id"], "path": without["path"],
                                       "prompt": pa.array([prompt] * without.num_rows, pa.string()),
                                       "_order": pc.add(without["_order"], n)}))  # fmt: skip
        inputs = pa.concat_tables(parts).sort_by("_order").drop_columns(["_order"])
        hashes = table_key_hashes(inputs)
        keep = ~np.isin(hashes, done)
        return TablePlan(inputs.filter(pa.array(keep)), np.unique(hashes), done)

    def images(self, image_ids: np.ndarray) -> ImageReader:
        return FileReader()

    def file_names(self) -> Callable[[dict], str]:
        return FileNames(self.items)

    def write_record(self, folder: Location) -> None:
        import io
        import json

        buffer = io.BytesIO()
        pq.write_table(self.items, buffer)
        folder.join(ITEMS_FILE).write_bytes(buffer.getvalue())
        folder.join(RECORD).write_text(json.dumps(self.record() | {"items": ITEMS_FILE}, ensure_ascii=False))

    @classmethod
    def from_record(cls, record: dict, folder: Location) -> TableSource:
        """The source a record describes; a record written before listings were kept (no items file) gives an
        empty listing, so exports name images by their paths."""
        items = ITEM_SCHEMA.empty_table()
        if record.get("items") and folder.join(record["items"]).is_file():
            with folder.fs.open_input_file(folder.join(record["items"]).path) as f:
                items = pq.read_table(f).cast(ITEM_SCHEMA)
        return cls(record.get("kind", "folder"), items, tuple(record.get("categories", ())))
