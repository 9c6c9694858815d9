"""A Parquet dataset whose rows carry the images (what Hugging Face `datasets` writes) as pipeline inputs.

Ray Data reads the dataset in its own tasks, so the driver never holds the images, nor a list of them. An input's
image id is the row's `image_id` column when there is one, a hash of the image struct's `path` when it has one,
and a hash of the image bytes otherwise; its prompt is the row's `prompt` when set, each of the job's prompts
otherwise. A row's `path` names where the image came from: the struct's path, or `DATASET#image_id=N`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.keys import key_hashes
from pipelines.sources import Source, bytes_image_id, stable_image_id
from storage import locate


def _ids_and_paths(batch: dict, source: Source) -> tuple[list[int], list[str]]:
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
        paths.append(str(path) if path else f"{source.parquet}#image_id={image_id}")
    return ids, paths


def expand(batch: dict, source: Source, prompts: list[str]) -> list[dict]:
    """Dataset rows -> inputs {image_id, path, prompt, bytes}: one per prompt (the row's own, or each job prompt)."""
    ids, paths = _ids_and_paths(batch, source)
    images = batch[source.image_column]
    own = batch.get("prompt")
    out = []
    for i, image in enumerate(images):
        data = image["bytes"] if isinstance(image, dict) else image
        row_prompts = [own[i]] if own is not None and own[i] else prompts
        for prompt in row_prompts:
            out.append({"image_id": ids[i], "path": paths[i], "prompt": prompt, "bytes": data})
    return out


def _columns(source: Source) -> list[str]:
    return [c for c in (source.image_column, "image_id", "prompt") if c in source.columns]


def _scan(source: Source, prompts: list[str], limit: int | None, batch_size: int = 4096):
    """(inputs, their key hashes) of the first `limit` dataset rows, a record batch at a time, in the driver."""
    import pyarrow.dataset as pads

    loc = locate(source.parquet)
    dataset = pads.dataset(loc.path, filesystem=loc.fs, format="parquet")
    seen = 0
    for record_batch in dataset.to_batches(columns=_columns(source), batch_size=batch_size):
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            record_batch = record_batch.slice(0, limit - seen)
        seen += record_batch.num_rows
        rows = expand(record_batch.to_pydict(), source, prompts)
        yield rows, key_hashes([r["image_id"] for r in rows], [r["prompt"] for r in rows])


def parquet_keys(source: Source, prompts: list[str], limit: int | None) -> np.ndarray:
    """Key hashes of every input of the dataset (the image bytes are read only when neither an image_id column
    nor image paths name the images)."""
    hashes = [h for _, h in _scan(source, prompts, limit)]
    return np.concatenate(hashes) if hashes else np.empty(0, np.int64)


def _expand_and_skip(batch: pa.Table, source: Source, prompts: list[str], done: np.ndarray) -> pa.Table:
    rows = expand(batch.to_pydict(), source, prompts)
    if len(done):
        hashes = key_hashes([r["image_id"] for r in rows], [r["prompt"] for r in rows])
        rows = [r for r, skip in zip(rows, np.isin(hashes, done), strict=True) if not skip]
    schema = pa.schema([("image_id", pa.int64()), ("path", pa.string()), ("prompt", pa.string()),
                        ("bytes", pa.binary())])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


def parquet_inputs(source: Source, prompts: list[str], done: np.ndarray, limit: int | None):
    """A Ray Dataset of the inputs still to do: {image_id, path, prompt, bytes}."""
    import ray

    loc = locate(source.parquet)
    ds = ray.data.read_parquet(loc.path, filesystem=loc.fs, columns=_columns(source))
    if limit is not None:
        ds = ds.limit(limit)
    return ds.map_batches(
        _expand_and_skip,
        fn_kwargs={"source": source, "prompts": prompts, "done": done},
        batch_format="pyarrow",
        num_cpus=0.25,
    )


def parquet_rows(source: Source, prompts: list[str], keys: np.ndarray, limit: int | None) -> list[dict]:
    """The inputs whose key hash is in `keys` (a few: those to isolate, an image to export), read in the driver."""
    found = []
    for rows, hashes in _scan(source, prompts, limit, batch_size=1024):
        found += [r for r, hit in zip(rows, np.isin(hashes, keys), strict=True) if hit]
    return found
