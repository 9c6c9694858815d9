"""The pipeline's pieces without Ray: decoding, sources and the replica."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from labeling.images import ImageDecodeError, decode_image, prepare
from pipelines.replica import Replica
from rows import ROW_SCHEMA
from sources import (
    SourceError,
    coco_source,
    folder_source,
    manifest_source,
    parquet_source,
    stable_image_id,
)
from specs.label import ReplicaSpec
from tasks import from_prompt


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# ---- decoding ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        "L",  # grayscale
        "1",  # bitmap
        "P",  # palette
        "RGBA",  # alpha
        "LA",  # grayscale + alpha
        "CMYK",  # print colours (JPEG)
        "I;16",  # 16-bit grayscale PNG
    ],
)
def test_every_mode_decodes_to_rgb_of_the_same_size(mode):
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    image = base.convert(mode) if mode != "I;16" else Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16))
    out = decode_image(encode(image, "JPEG" if mode == "CMYK" else "PNG"))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_16_bit_gray_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16)[None].repeat(4, 0)
    out = np.asarray(decode_image(encode(Image.fromarray(ramp))))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 120 <= out[0, 128, 0] <= 135  # not all white


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black and fully transparent
    rgba[:, :2] = [255, 0, 0, 255]
    out = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"))))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 3].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    out = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),  # an empty file
        (b"\xff\xd8 not an image", "not an image file"),  # garbage with a JPEG signature
        (encode(Image.new("RGB", (64, 64), "blue"), "JPEG")[:200], "(?i)truncated"),  # a truncated JPEG
    ],
)
def test_bad_files_raise_a_readable_error(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_pixel_limit_refuses_large_images_before_decoding():
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        decode_image(encode(Image.new("L", (100, 100))), max_pixels=9_999)


def test_prepare_resizes_like_the_model_and_keeps_the_original_size(photo_paths, tmp_path):
    from labeling import open_image
    from model.image_processing import ImageProcessor

    row = prepare({"image_id": 1, "path": str(photo_paths[1]), "prompt": "ocr"}, size=56)
    original = open_image(str(photo_paths[1]))
    assert (row["width"], row["height"]) == original.size and row["error"] == ""
    processor = ImageProcessor(size=56)
    assert np.array_equal(processor.one(Image.fromarray(row["pixels"])), processor.one(original))
    bad = prepare({"image_id": 2, "path": str(tmp_path / "missing.jpg"), "prompt": "ocr"}, size=56)
    assert bad["pixels"].shape == (56, 56, 3) and "cannot read file" in bad["error"]


# ---- sources ----------------------------------------------------------------------------------------------------


def items(source) -> list[dict]:
    return source.items.to_pylist()


def test_folder_source_is_recursive_with_stable_ids(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x.jpg", "a/y.PNG", "a/b/z.webp", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"")
    source = folder_source(tmp_path)
    assert sorted(i["file_name"] for i in items(source)) == ["a/b/z.webp", "a/y.PNG", "x.jpg"]
    by_name = {i["file_name"]: i for i in items(source)}
    assert by_name["a/y.PNG"]["image_id"] == stable_image_id("a/y.PNG")
    (tmp_path / "new.jpg").write_bytes(b"")  # adding a file changes no other id
    again = {i["file_name"]: i["image_id"] for i in items(folder_source(tmp_path))}
    assert all(again[name] == i["image_id"] for name, i in by_name.items())
    assert all(0 < i["image_id"] < 2**53 for i in items(source))


def test_a_symlink_keeps_its_own_name(tmp_path, photo_paths):
    (tmp_path / "cat.png").symlink_to(photo_paths[1])  # chelsea.png under another name
    (tmp_path / "chelsea.png").write_bytes(photo_paths[1].read_bytes())
    paths = sorted(i["path"] for i in items(folder_source(tmp_path)))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["cat.png", "chelsea.png"]


def test_folder_source_errors(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        folder_source(tmp_path / "missing")
    with pytest.raises(SourceError, match="no image files"):
        folder_source(tmp_path)


def test_coco_source_keeps_ids_and_categories(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "cat"}]}))
    source = coco_source(ann, tmp_path)
    assert items(source)[0]["image_id"] == 7 and items(source)[0]["path"] == str(tmp_path / "a.jpg")
    assert source.categories == ({"id": 3, "name": "cat"},)
    ann.write_text("{not json")
    with pytest.raises(SourceError, match="cannot read"):
        coco_source(ann, tmp_path)


def test_manifest_csv_and_parquet(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"path": ["a.jpg", "a.jpg", "/abs/b.png"], "prompt": ["caption en", "ocr", None]})
    table.to_csv(tmp_path / "m.csv", index=False)
    table.assign(image_id=[5, 5, 6]).to_parquet(tmp_path / "m.parquet")
    csv = items(manifest_source(tmp_path / "m.csv"))
    assert [i["prompt"] for i in csv] == ["caption en", "ocr", None]
    assert csv[0]["path"] == str(tmp_path / "a.jpg") and csv[0]["image_id"] == csv[1]["image_id"]
    assert [i["image_id"] for i in items(manifest_source(tmp_path / "m.parquet"))] == [5, 5, 6]
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "prompt": ["ocr", "ocr"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(SourceError, match="appears twice"):
        manifest_source(tmp_path / "dup.csv")
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(SourceError, match="'path' column"):
        manifest_source(tmp_path / "nopath.csv")


def test_manifest_uris_stay_uris_and_relative_paths_follow_the_manifest(tmp_path):
    import pandas as pd

    pd.DataFrame({"path": ["s3://bucket/photos/a.jpg", "b.jpg"]}).to_parquet(tmp_path / "m.parquet")
    paths = [i["path"] for i in items(manifest_source(tmp_path / "m.parquet"))]
    assert paths == ["s3://bucket/photos/a.jpg", str(tmp_path / "b.jpg")]


def test_parquet_source_finds_the_image_column(tmp_path, photo_paths):
    import pyarrow.parquet as pq

    struct = [{"bytes": photo_paths[0].read_bytes(), "path": "astronaut.png"}]
    pq.write_table(pa.table({"image": struct, "prompt": ["ocr"]}), tmp_path / "hf.parquet")
    source = parquet_source(tmp_path / "hf.parquet")
    assert source.kind == "parquet" and source.image_column == "image" and "prompt" in source.columns
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "noimage.parquet")
    with pytest.raises(SourceError, match="no image column"):
        parquet_source(tmp_path / "noimage.parquet")


# ---- the replica, called directly -------------------------------------------------------------------------------


def replica_batch(photo_paths, size: int, prompts: list[str]) -> dict:
    rows = [prepare({"image_id": i, "path": str(p), "prompt": prompts[i]}, size) for i, p in enumerate(photo_paths)]
    rows.append(prepare({"image_id": 99, "path": "/nonexistent.jpg", "prompt": prompts[0]}, size))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("backend", ["native", "transformers"])
def test_replica_rows_match_plain_generate_for_both_backends(backend, checkpoint, photo_paths, photos):
    from model import PaliGemma

    folder = checkpoint("tiny")[0]
    prompts = ["detect cat ; dog", "caption en", "segment cat", "the red car"]
    spec = ReplicaSpec(checkpoint=str(folder), backend=backend, max_new_tokens=6)
    replica = Replica(spec, [from_prompt("detect cat ; dog")])
    table = replica(replica_batch(photo_paths, 56, prompts))
    assert table.schema == ROW_SCHEMA and table.num_rows == len(photo_paths) + 1
    rows = table.to_pylist()
    expected = PaliGemma.from_pretrained(folder).generate(photos, prompts, max_new_tokens=6)
    assert [r["text"] for r in rows[:-1]] == expected
    assert [r["task"] for r in rows[:-1]] == ["detect", "caption", "segment", "raw"]
    assert rows[-1]["error"].startswith("cannot read file") and rows[-1]["text"] == ""
    assert rows[-1]["error_kind"] == "read" and all(r["error_kind"] is None for r in rows[:-1])
    assert all(r["error"] is None and r["seconds"] > 0 and r["model"] == folder.name for r in rows[:-1])
    assert torch.is_grad_enabled()  # a replica in this process leaves autograd as it found it (training may follow)


class FakeSegmenter:
    """A backend that answers every prompt with one segmented cat, so the mask path runs without trained weights."""

    name = "fake"
    image_size = 56

    def __init__(self, checkpoint, dtype, device, **_):
        import torch

        self.device = torch.device("cpu")

    def generate(self, images, prompts, *, max_new_tokens, **options):
        from model import Generation

        tokens = ["<loc0256>", "<loc0256>", "<loc0768>", "<loc0768>", *[f"<seg{i:03d}>" for i in range(16)], " cat"]
        return [Generation("".join(tokens), list(range(21)), tokens, [-0.1] * 21, True) for _ in images]


def test_segment_rows_carry_masks_decoded_by_the_replica(monkeypatch, tmp_path, photo_paths):
    from decoders import rle_to_mask
    from labeling import backends
    from rows import categories_for, rows_to_coco_results
    from testing.vae import write_random_vae_npz

    monkeypatch.setitem(backends.BACKENDS, "fake", FakeSegmenter)
    vae = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8)
    replica = Replica(ReplicaSpec(checkpoint="unused", backend="fake", vae=str(vae)))
    rows = replica(replica_batch(photo_paths[:2], 56, ["segment cat"] * 2)).to_pylist()
    (obj,) = rows[0]["objects"]
    assert obj["label"] == "cat" and obj["score"] == pytest.approx(np.exp(-0.1))
    mask = rle_to_mask(obj["mask"])
    assert mask.shape == (512, 512) and mask.any() and not mask[:100].any()  # inside the box only
    results, _ = rows_to_coco_results(rows, categories_for(["cat"]))
    assert results[0]["segmentation"] == obj["mask"] and results[0]["bbox"][2] == pytest.approx(256, abs=1)


# ---- error kinds -------------------------------------------------------------------------------------------------


def test_resume_reads_error_kinds_from_rows_and_from_old_messages(tmp_path):
    """Rows carry their error's kind; rows of outputs written before that are read by their message, there only."""
    import pyarrow.parquet as pq

    from pipelines.output import OutputFolder
    from rows import error_row, rows_to_table
    from rows.keys import key_hashes

    out = OutputFolder(tmp_path / "out")
    out.prepare({}, resume=False)
    now = [error_row(1, "/a.png", "ocr", "ocr", "a message in new words", "read"),
           error_row(2, "/b.png", "ocr", "ocr", "cannot decode image: broken", "decode")]  # fmt: skip
    out.parts.write(rows_to_table(now))
    old = rows_to_table([error_row(3, "/c.png", "ocr", "ocr", "cannot read file: gone", "read")]).drop_columns(
        ["error_kind"]
    )
    name = "part-old-00000.parquet"
    pq.write_table(old, tmp_path / "out" / "predictions" / name)
    out.parts._commit(name, 1)
    done = out.done_keys(skip_errors=("read",))  # to be retried: rows 1 (by its kind) and 3 (by its old message)
    assert done.tolist() == key_hashes([2], ["ocr"]).tolist()
