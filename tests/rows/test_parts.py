"""Parquet parts and their commit records: what counts, what a dead writer leaves, and rewriting without dupes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from rows import ROW_SCHEMA, PartStore, error_row, find_parts, read_rows, rows_to_table


def table(*ids: int):
    return rows_to_table([error_row(i, f"/x/{i}.png", "ocr", "ocr", "cannot read file: gone", "read") for i in ids])


def test_a_part_counts_once_its_commit_record_exists(tmp_path):
    store = PartStore(tmp_path / "predictions")
    store.prepare()
    store.write(table(1, 2))
    half = store.write(table(3), commit=False)  # as if the writer died before committing
    assert half.exists() and [r["image_id"] for r in store.iter_rows()] == [1, 2]
    assert store.row_keys() == {(1, "ocr"), (2, "ocr")} and store.count() == 2
    assert [r["image_id"] for r in read_rows(tmp_path)] == [1, 2]  # readers of the output folder agree
    PartStore(tmp_path / "predictions").prepare()  # the next writer removes what the dead one left
    assert not half.exists() and store.count() == 2


def test_a_folder_without_commit_records_reads_as_it_is_and_is_adopted(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    pq.write_table(table(5).cast(ROW_SCHEMA), folder / "part-old-00000.parquet")  # written by an older version
    store = PartStore(folder)
    assert store.row_keys() == {(5, "ocr")}
    store.prepare()
    store.write(table(6))
    assert sorted(image_id for image_id, _ in store.row_keys()) == [5, 6]


def ids(folder) -> list[int]:
    return sorted(r["image_id"] for r in PartStore(folder).iter_rows())


@pytest.mark.parametrize("crash_at", ["delete", "_commit"])  # before the old commit goes; before the new one comes
def test_replacing_a_part_never_shows_a_key_twice(tmp_path, monkeypatch, crash_at):
    store = PartStore(tmp_path / "p")
    store.prepare()
    old = store.write(table(1, 2, 3))
    target = old.__class__ if crash_at == "delete" else store

    def killed(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(target, crash_at, killed)
    with pytest.raises(RuntimeError):
        store.replace(old, table(1, 3))
    monkeypatch.undo()
    seen = ids(tmp_path / "p")
    assert len(seen) == len(set(seen)) and set(seen) <= {1, 2, 3}  # rows may be lost (labeled again), not doubled
    store.prepare()
    assert ids(tmp_path / "p") == seen  # the next writer removes the half-done part and changes nothing else
    store.replace(store.parts()[0], table(1, 3)) if seen else None
    assert ids(tmp_path / "p") == ([1, 3] if seen else [])


def test_find_parts_takes_a_file_an_output_folder_or_a_plain_folder(tmp_path):
    store = PartStore(tmp_path / "out" / "predictions")
    store.prepare()
    part = store.write(table(1))
    assert [p.path for p in find_parts(tmp_path / "out")] == [part.path]
    assert [p.path for p in find_parts(part.path)] == [part.path]
    plain = tmp_path / "plain" / "sub"
    plain.mkdir(parents=True)
    pq.write_table(table(9), plain / "x.parquet")
    pq.write_table(table(10), plain / "_hidden.parquet")
    assert [p.name for p in find_parts(tmp_path / "plain")] == ["x.parquet"]
