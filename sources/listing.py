"""Listing the inputs of a source: an image folder, a COCO dataset's images, a Parquet/CSV manifest (all local or
URIs) become a TableSource; a Parquet dataset that carries the image bytes becomes a ParquetSource, whose rows
Ray Data reads in its own tasks.

A folder URI is listed by its filesystem (pyarrow's S3, GCS, Azure or HDFS clients). Paths stay as the user wrote
them: a URI stays a URI (every node of a cluster can read it), a relative manifest path is taken from the
manifest's folder (local or remote), and a symbolic link keeps its own name.

Image ids are stable: a COCO file's own ids are kept; a folder's (and a manifest's without an `image_id` column)
are derived from the path relative to the folder, so the same file gets the same id on every run and machine,
whatever else is added to the folder.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sources.base import IMAGE_EXTENSIONS, SourceError, stable_image_id
from sources.parquet import ParquetSource
from sources.table import ITEM_SCHEMA, TableSource
from storage import Location, StorageError, is_uri, locate


def _location(text: str | os.PathLike, flag: str) -> Location:
    try:
        return locate(text)
    except StorageError as e:
        raise SourceError(f"{flag} {text}: {e}") from e


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SourceError(message)


@dataclass
class Walk:
    """What a folder walk found: relative paths of the image files, and what it skipped and why."""

    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def keep(self, rel: str) -> bool:
        """Whether a relative path is an image to label (hidden names and other extensions are counted)."""
        if any(part.startswith(".") for part in rel.split("/")):
            self.skipped["hidden"] += 1
            return False
        if posixpath.splitext(rel)[1].lower() not in IMAGE_EXTENSIONS:
            self.skipped["not an image"] += 1
            return False
        return True


def walk_local(root: str) -> Walk:
    """Every regular file under a local folder once, however many paths reach it: symbolic links are followed,
    a link back into a folder being walked (a loop) is skipped with a note, and a file reached by several paths
    (links, hard links) keeps the first of them in sorted order."""
    walk, candidates = Walk(), []

    def visit(folder: str, rel: str, ancestors: frozenset) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                info = os.stat(entry.path)  # follows links
            except OSError:
                walk.skipped["broken link"] += 1
                continue
            key = (info.st_dev, info.st_ino)
            if stat.S_ISDIR(info.st_mode):
                if key in ancestors:
                    walk.skipped["link loop"] += 1
                    target = os.readlink(entry.path) if entry.is_symlink() else "a folder above it"
                    walk.notes.append(f"skipped a link loop: {path} -> {target} (the folder is already being read)")
                else:
                    visit(entry.path, path, ancestors | {key})
            elif stat.S_ISREG(info.st_mode) and walk.keep(path):
                candidates.append((path, key))

    top = os.stat(root)
    visit(root, "", frozenset({(top.st_dev, top.st_ino)}))
    seen: set[tuple[int, int]] = set()
    for path, key in sorted(candidates):
        if key in seen:
            walk.skipped["same file"] += 1
        else:
            seen.add(key)
            walk.files.append(path)
    return walk


def walk_remote(root: Location) -> Walk:
    """Every object under a URI prefix (object stores have no links)."""
    walk = Walk()
    prefix = root.path.rstrip("/")
    for info in root.list(recursive=True):
        rel = info.path[len(prefix) :].lstrip("/")
        if walk.keep(rel):
            walk.files.append(rel)
    return walk


def folder_source(images: str | os.PathLike) -> TableSource:
    """Every image file under `images` (a folder or a URI prefix; recursive, by extension, hidden names skipped),
    each file once, in path order."""
    root = _location(images, "--images")
    try:
        is_dir = root.is_dir()
        walk = (walk_local(root.path) if root.local else walk_remote(root)) if is_dir or not root.local else Walk()
    except (StorageError, OSError) as e:
        raise SourceError(f"--images {images}: {e}") from e
    if not is_dir and not (root.local is False and walk.files):
        raise SourceError(f"--images {images}: not a folder")
    _check(bool(walk.files), f"--images {images}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    paths = [root.join(*rel.split("/")).uri for rel in walk.files]
    table = _items([stable_image_id(rel) for rel in walk.files], paths, walk.files, [None] * len(paths))
    _check_unique(table, f"--images {images}")
    return TableSource("folder", table, skipped=dict(walk.skipped), notes=tuple(walk.notes))


def coco_source(annotations: str | os.PathLike, images: str | os.PathLike) -> TableSource:
    """The images a COCO file lists (its ids kept), found under `images` (a folder or URI) by their file_name."""
    ann = _location(annotations, "--coco")
    root = _location(images, "--images")
    try:
        data = json.loads(ann.read_bytes())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"--coco {annotations}: cannot read a COCO JSON file ({e})") from e
    _check(
        isinstance(data, dict) and isinstance(data.get("images"), list),
        f"--coco {annotations}: expected a COCO dataset with an 'images' list",
    )
    if root.local:
        _check(root.is_dir(), f"--images {images}: not a folder")
    ids, paths, names = [], [], []
    for image in data["images"]:
        try:
            image_id, file_name = int(image["id"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(
                f"--coco {annotations}: an image entry lacks an integer 'id' or a 'file_name': {image}"
            ) from e
        ids.append(image_id)
        paths.append(file_name if is_uri(file_name) else root.join(*file_name.split("/")).uri)
        names.append(file_name)
    _check(bool(ids), f"--coco {annotations}: the 'images' list is empty")
    table = _items(ids, paths, names, [None] * len(ids))
    _check_unique(table, f"--coco {annotations}")
    categories = tuple({"id": int(c["id"]), "name": str(c["name"])} for c in data.get("categories", []))
    return TableSource("coco", table, categories)


def manifest_source(manifest: str | os.PathLike) -> TableSource:
    """A Parquet or CSV table (local or URI) with a `path` column and optional `prompt` and `image_id` columns.

    A path may be absolute, a URI, or relative to the manifest's folder. Rows may repeat an image with different
    prompts; an (image_id, prompt) pair may appear once.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    loc = _location(manifest, "--manifest")
    suffix = posixpath.splitext(loc.path)[1].lower()
    try:
        if suffix in (".parquet", ".pq"):
            with loc.fs.open_input_file(loc.path) as f:
                table = pq.read_table(f)
        elif suffix in (".csv", ".tsv"):
            options = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            convert = pacsv.ConvertOptions(column_types={"path": pa.string(), "prompt": pa.string()})
            with loc.fs.open_input_stream(loc.path) as f:
                table = pacsv.read_csv(f, parse_options=options, convert_options=convert)
        else:
            raise SourceError(f"--manifest {manifest}: expected a .parquet or .csv file")
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for unreadable files
        raise SourceError(f"--manifest {manifest}: cannot read it ({e})") from e
    columns = table.column_names
    _check("path" in columns, f"--manifest {manifest}: expected a 'path' column but got {', '.join(columns)}")
    _check(table.num_rows > 0, f"--manifest {manifest}: no rows")
    folder = _parent(loc)
    has_prompt, has_id = "prompt" in columns, "image_id" in columns
    chunks = []
    for start in range(0, table.num_rows, 65536):  # a chunk at a time: no Python lists of a million paths
        part = table.slice(start, 65536)
        raw_paths = part["path"].to_pylist()
        prompts = part["prompt"].to_pylist() if has_prompt else [None] * part.num_rows
        given_ids = part["image_id"].to_pylist() if has_id else [None] * part.num_rows
        ids, paths = [], []
        for i, (raw, given) in enumerate(zip(raw_paths, given_ids, strict=True)):
            _check(isinstance(raw, str) and bool(raw), f"--manifest {manifest}: row {start + i} has no path")
            paths.append(raw if is_uri(raw) or os.path.isabs(raw) else folder.join(*raw.split("/")).uri)
            missing = given is None or (isinstance(given, float) and given != given)  # missing or NaN
            ids.append(stable_image_id(posixpath.normpath(raw)) if missing else int(given))
        prompts = [p if isinstance(p, str) and p.strip() else None for p in prompts]
        chunks.append(_items(ids, paths, raw_paths, prompts))
    table = pa.concat_tables(chunks)
    _check_unique_keys(table, f"--manifest {manifest}")
    return TableSource("manifest", table)


def parquet_source(dataset: str | os.PathLike, image_column: str | None = None) -> ParquetSource:
    """A Parquet file or folder (local or URI) whose rows carry the images: a `{bytes, path}` struct (what
    Hugging Face `datasets` writes) or a binary column, with optional `prompt` and `image_id` columns."""
    import pyarrow.dataset as pads

    loc = _location(dataset, "--parquet")
    try:
        schema = pads.dataset(loc.path, filesystem=loc.fs, format="parquet").schema
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise SourceError(f"--parquet {dataset}: cannot read a Parquet dataset ({e})") from e
    names = schema.names
    column = image_column or next((c for c in ("image", "img", "bytes") if c in names), None)
    _check(
        column in names,
        f"--parquet {dataset}: no image column (give --image-column; columns are {', '.join(names)})",
    )
    kind = schema.field(column).type
    is_struct = pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0
    _check(
        is_struct or pa.types.is_binary(kind) or pa.types.is_large_binary(kind),
        f"--parquet {dataset}: column {column!r} is {kind}, expected image bytes or a {{bytes, path}} struct",
    )
    return ParquetSource(loc.uri, column, tuple(names))


def _parent(loc: Location) -> Location:
    if loc.local:
        folder = os.path.dirname(loc.path)
        return Location(loc.fs, folder, folder)
    return Location(loc.fs, posixpath.dirname(loc.path), posixpath.dirname(loc.uri))


def _items(ids: list[int], paths: list[str], names: list[str], prompts: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "image_id": pa.array(ids, pa.int64()),
            "path": pa.array(paths, pa.string()),
            "file_name": pa.array(names, pa.string()),
            "prompt": pa.array(prompts, pa.string()),
        },
        schema=ITEM_SCHEMA,
    )


def _check_unique_keys(table: pa.Table, where: str) -> None:
    """An (image_id, prompt) pair may appear once in a manifest."""
    from rows.keys import table_key_hashes

    hashes = table_key_hashes(table)
    if len(np.unique(hashes)) == len(hashes):
        return
    seen: dict[int, int] = {}
    for n, h in enumerate(hashes.tolist()):
        if h in seen:
            row = table.slice(n, 1).to_pylist()[0]
            raise SourceError(f"{where}: image {row['image_id']} ({row['path']}) appears twice with one prompt")
        seen[h] = n


def _check_unique(table: pa.Table, where: str) -> None:
    ids = table["image_id"].to_numpy()
    if len(np.unique(ids)) == len(ids):
        return
    seen: dict[int, str] = {}
    for image_id, path in zip(ids.tolist(), table["path"].to_pylist(), strict=True):
        if image_id in seen:
            raise SourceError(f"{where}: image id {image_id} is used by both {seen[image_id]} and {path}")
        seen[image_id] = path
