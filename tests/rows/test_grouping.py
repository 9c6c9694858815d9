"""An image's rows together, from parts that scatter them, in memory or through the spill to hash buckets."""

from __future__ import annotations

import random

import pytest

from rows import PartStore, error_row, rows_to_table
from rows.grouping import rows_by_image


@pytest.mark.parametrize("max_rows", [10_000, 7])  # all in memory; spilled into buckets of a few rows
def test_every_image_comes_once_with_all_its_rows_in_written_order(tmp_path, max_rows):
    rows = [error_row(i % 9 * 1000003, f"/{i % 9}.png", f"prompt {i}", "ocr", "x", "read") for i in range(60)]
    random.Random(0).shuffle(rows)
    store = PartStore(tmp_path / "predictions")
    store.prepare()
    for k in range(0, len(rows), 7):
        store.write(rows_to_table(rows[k : k + 7]))
    groups = list(rows_by_image(store, max_rows=max_rows))
    assert len(groups) == 9 and all(len({r["image_id"] for r in g}) == 1 for g in groups)
    assert sorted(r["prompt"] for g in groups for r in g) == sorted(r["prompt"] for r in rows)
    for group in groups:  # within an image, the order the rows were written in
        written = [r["prompt"] for r in rows if r["image_id"] == group[0]["image_id"]]
        assert [r["prompt"] for r in group] == written


def test_an_empty_output_has_no_groups(tmp_path):
    store = PartStore(tmp_path / "predictions")
    store.prepare()
    assert list(rows_by_image(store)) == []
