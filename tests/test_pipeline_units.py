"""The pipeline's pieces without Ray: decoding, sources, COCO export, the output folder and the replica."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.coco_export import categories_for, dataset_file, results_file
from pipelines.decode import ImageDecodeError, decode_image, prepare
from pipelines.output import OutputError, OutputFolder
from pipelines.replica import ROW_SCHEMA, Replica, task_for_prompt
from pipelines.sources import SourceError, coco_source, folder_source, manifest_source, stable_image_id


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
    from model.image_processing import ImageProcessor, load_image

    row = prepare({"image_id": 1, "path": str(photo_paths[1]), "prompt": "ocr"}, size=56)
    original = load_image(photo_paths[1])
    assert (row["width"], row["height"]) == original.size and row["error"] == ""
    processor = ImageProcessor(size=56)
    assert np.array_equal(processor.one(Image.fromarray(row["pixels"])), processor.one(original))
    bad = prepare({"image_id": 2, "path": str(tmp_path / "missing.jpg"), "prompt": "ocr"}, size=56)
    assert bad["pixels"].shape == (56, 56, 3) and "cannot read file" in bad["error"]


# ---- sources ----------------------------------------------------------------------------------------------------


def test_folder_source_is_recursive_with_stable_ids(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x.jpg", "a/y.PNG", "a/b/z.webp", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"")
    source = folder_source(tmp_path)
    assert [i.file_name for i in source.items] == ["x.jpg", "a/y.PNG", "a/b/z.webp"]
    assert source.items[1].image_id == stable_image_id("a/y.PNG")
    (tmp_path / "new.jpg").write_bytes(b"")  # adding a file changes no other id
    again = {i.file_name: i.image_id for i in folder_source(tmp_path).items}
    assert all(again[i.file_name] == i.image_id for i in source.items)
    assert all(0 < i.image_id < 2**53 for i in source.items)


def test_folder_source_errors(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        folder_source(tmp_path / "missing")
    with pytest.raises(SourceError, match="no image files"):
        folder_source(tmp_path)


def test_coco_source_keeps_ids_and_categories(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "cat"}]}))
    source = coco_source(ann, tmp_path)
    assert source.items[0].image_id == 7 and source.items[0].path == str(tmp_path / "a.jpg")
    assert source.categories == ({"id": 3, "name": "cat"},)
    ann.write_text("{not json")
    with pytest.raises(SourceError, match="cannot read"):
        coco_source(ann, tmp_path)


def test_manifest_csv_and_parquet(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"path": ["a.jpg", "a.jpg", "/abs/b.png"], "prompt": ["caption en", "ocr", None]})
    table.to_csv(tmp_path / "m.csv", index=False)
    table.assign(image_id=[5, 5, 6]).to_parquet(tmp_path / "m.parquet")
    csv = manifest_source(tmp_path / "m.csv")
    assert [i.prompt for i in csv.items] == ["caption en", "ocr", None]
    assert csv.items[0].path == str(tmp_path / "a.jpg") and csv.items[0].image_id == csv.items[1].image_id
    assert [i.image_id for i in manifest_source(tmp_path / "m.parquet").items] == [5, 5, 6]
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "prompt": ["ocr", "ocr"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(SourceError, match="appears twice"):
        manifest_source(tmp_path / "dup.csv")
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(SourceError, match="'path' column"):
        manifest_source(tmp_path / "nopath.csv")


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("detect cat ; dog", "detect"),  # classes from the prompt
        ("segment person", "segment"),
        ("caption en", "caption"),
        ("ocr", "ocr"),
        ("answer en what is this", "raw"),  # answers are read as free text
        ("the red car on the left", "raw"),  # a referring expression
        ("detect ", "raw"),  # no classes: not a detect prompt
    ],
)
def test_task_for_prompt(prompt, name):
    assert task_for_prompt(prompt).name == name


# ---- COCO export ------------------------------------------------------------------------------------------------


def make_rows():
    from decoders import mask_to_rle

    mask = np.zeros((30, 40), dtype=bool)
    mask[5:15, 10:30] = True
    objs = [
        {"label": "cat", "box": [10.0, 5.0, 30.0, 15.0], "score": 0.9, "mask": mask_to_rle(mask)},
        {"label": "dog", "box": [0.0, 0.0, 8.0, 6.0], "score": 0.4, "mask": None},
        {"label": "zebra", "box": [1.0, 1.0, 2.0, 2.0], "score": 0.5, "mask": None},  # not one of the classes
    ]
    base = {"path": "/x/a.png", "width": 40, "height": 30, "task": "segment", "prompt": "segment cat ; dog"}
    return [
        {**base, "image_id": 11, "objects": objs, "error": None, "text": ""},
        {**base, "image_id": 12, "objects": [], "error": None, "text": ""},  # an image with nothing found
        {**base, "image_id": 13, "objects": [], "error": "cannot decode", "width": 0, "height": 0, "text": ""},
    ]


def test_categories_keep_known_ids_and_number_the_rest_from_one():
    assert categories_for(["cat", "dog"]) == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    known = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}]
    assert categories_for(["cat", "dog"], known) == [{"id": 17, "name": "cat"}, {"id": 2, "name": "dog"}]


def test_coco_files_load_in_pycocotools_and_supervision(tmp_path):
    import supervision as sv
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rows, cats = make_rows(), categories_for(["cat", "dog"])
    dataset = dataset_file(rows, cats, {11: "a.png", 12: "b.png"})
    results, unknown = results_file(rows, cats)
    assert unknown == 1 and [r["category_id"] for r in results] == [1, 2]
    assert results[0]["bbox"] == [10.0, 5.0, 20.0, 10.0] and "segmentation" in results[0]
    assert [i["id"] for i in dataset["images"]] == [11, 12]  # the failed image is not in the dataset
    anns = dataset["annotations"]
    assert [a["id"] for a in anns] == [1, 2] and all(a["iscrowd"] == 0 for a in anns)
    assert anns[0]["area"] == 200.0 and anns[1]["area"] == 48.0  # mask area; box area without a mask
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    gt = COCO(str(tmp_path / "gt.json"))
    for iou_type in ("bbox", "segm"):
        dt = gt.loadRes([r for r in results if iou_type == "bbox" or "segmentation" in r])
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate(), ev.accumulate()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    ds = sv.DetectionDataset.from_coco(str(tmp_path), str(tmp_path / "gt.json"), force_masks=True)
    assert len(ds) == 2 and ds.classes == ["cat", "dog"]
    dets = dict((p.rsplit("/", 1)[-1], d) for p, _, d in ds)["a.png"]
    assert len(dets) == 2 and dets.mask[0].sum() == 200
    assert len(dataset_file(rows, cats, min_score=0.5)["annotations"]) == 1


# ---- output folder ----------------------------------------------------------------------------------------------


def test_output_folder_writes_whole_parts_and_guards_resume(tmp_path):
    out = OutputFolder(tmp_path / "out")
    out.prepare({"task": "a"}, resume=False)
    (out.parts / ".part-old-00000.parquet.tmp").write_bytes(b"half")  # left by a killed run
    row = {name: None for name in ROW_SCHEMA.names} | {"image_id": 1, "prompt": "ocr", "objects": []}
    out.write_part(pa.Table.from_pylist([row], schema=ROW_SCHEMA))
    assert out.done_keys() == {(1, "ocr")} and [p.name[:5] for p in out.part_files()] == ["part-"]
    with pytest.raises(OutputError, match="pass --resume"):
        OutputFolder(tmp_path / "out").prepare({"task": "a"}, resume=False)
    with pytest.raises(OutputError, match="other settings"):
        OutputFolder(tmp_path / "out").prepare({"task": "b"}, resume=True)
    OutputFolder(tmp_path / "out").prepare({"task": "a"}, resume=True)
    assert not list(out.parts.glob(".*.tmp")) and out.read_rows().num_rows == 1


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
    task = {"name": "detect", "classes": "cat ; dog"}
    replica = Replica(str(folder), task, backend=backend, max_new_tokens=6)
    table = replica(replica_batch(photo_paths, 56, prompts))
    assert table.schema == ROW_SCHEMA and table.num_rows == len(photo_paths) + 1
    rows = table.to_pylist()
    expected = PaliGemma.from_pretrained(folder).generate(photos, prompts, max_new_tokens=6)
    assert [r["text"] for r in rows[:-1]] == expected
    assert [r["task"] for r in rows[:-1]] == ["detect", "caption", "segment", "raw"]
    assert rows[-1]["error"].startswith("cannot read file") and rows[-1]["text"] == ""
    assert all(r["error"] is None and r["seconds"] > 0 and r["model"] == folder.name for r in rows[:-1])


class FakeSegmenter:
    """A backend that answers every prompt with one segmented cat, so the mask path runs without trained weights."""

    name = "fake"

    def __init__(self, checkpoint, dtype, device):
        import torch

        self.device = torch.device("cpu")

    def generate(self, images, prompts, max_new_tokens):
        from model import Generation

        tokens = ["<loc0256>", "<loc0256>", "<loc0768>", "<loc0768>", *[f"<seg{i:03d}>" for i in range(16)], " cat"]
        return [Generation("".join(tokens), list(range(21)), tokens, [-0.1] * 21, True) for _ in images]


def test_segment_rows_carry_masks_decoded_by_the_replica(monkeypatch, tmp_path, photo_paths):
    from decoders import rle_to_mask, write_random_vae_npz
    from pipelines import replica as replica_module

    monkeypatch.setitem(replica_module.BACKENDS, "fake", FakeSegmenter)
    vae = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8)
    replica = Replica("unused", {"name": "segment", "classes": "cat"}, backend="fake", vae=vae)
    rows = replica(replica_batch(photo_paths[:2], 56, ["segment cat"] * 2)).to_pylist()
    (obj,) = rows[0]["objects"]
    assert obj["label"] == "cat" and obj["score"] == pytest.approx(np.exp(-0.1))
    mask = rle_to_mask(obj["mask"])
    assert mask.shape == (512, 512) and mask.any() and not mask[:100].any()  # inside the box only
    results, _ = results_file(rows, categories_for(["cat"]))
    assert results[0]["segmentation"] == obj["mask"] and results[0]["bbox"][2] == pytest.approx(256, abs=1)
