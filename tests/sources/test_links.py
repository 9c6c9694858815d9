"""A folder's files each once, however many paths reach them: loops skipped and named, duplicates counted."""

from __future__ import annotations

import os
import shutil

from sources import folder_source


def test_a_loop_a_second_link_and_a_hard_link_leave_each_file_once(photo_paths, tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    shutil.copy(photo_paths[0], tmp_path / "a" / "x.png")
    shutil.copy(photo_paths[1], tmp_path / "b.png")
    (tmp_path / "a" / "deep" / "up").symlink_to("../..")  # a loop two levels up
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "b.png")
    os.link(tmp_path / "b.png", tmp_path / "c.png")
    (tmp_path / "elsewhere").symlink_to(photo_paths[2].parent)  # a link to a folder outside: followed, ordinary
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    source = folder_source(tmp_path)
    names = source.items["file_name"].to_pylist()
    assert "a/link.png" in names and "b.png" not in names and "c.png" not in names  # first in sorted order wins
    assert "a/x.png" in names and any(n.startswith("elsewhere/") for n in names)
    assert len(names) == len(set(source.items["path"].to_pylist()))
    assert source.skipped["link loop"] == 1 and source.skipped["same file"] == 2
    assert source.skipped["broken link"] == 1
    assert len(source.notes) == 1 and "a/deep/up -> ../.." in source.notes[0]
