"""Label Studio exports (read offline), label rows as pseudo-labels, referring-expression tables, class maps and
object order."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from decoders import mask_to_rle, parse_objects
from jobs.make_records import main as make_records
from records import Item, Obj, Problems, RecordBuilder, RecordOptions, parse_class_map
from records.labelstudio import labelstudio_items
from rows import PartStore, rows_to_table

from .helpers import VAE, read_jsonl

W, H = 200, 100


def _rect(label, x, y, w, h, rotation=0.0, rid="r"):
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": W,
            "original_height": H, "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 100 * w / W,
                                            "height": 100 * h / H, "rotation": rotation,
                                            "rectanglelabels": [label]}}  # fmt: skip


def _brush(label, mask, rid="b"):
    from label_studio_sdk.converter.brush import mask2rle

    rle = mask2rle(mask.astype(np.uint8) * 255)
    return {"id": rid, "type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": W,
            "original_height": H, "value": {"format": "rle", "rle": [int(v) for v in rle],
                                            "brushlabels": [label]}}  # fmt: skip


def test_labelstudio_takes_the_reviewed_annotation_not_the_predictions(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        Image.new("RGB", (W, H), "white").save(root / "sub" / f"{name}.png")
    blob = np.zeros((H, W), bool)
    blob[40:80, 120:170] = True
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=sub/a.png"},
         "predictions": [{"result": [_rect("cat", 10, 10, 30, 30), _rect("dog", 100, 10, 20, 20)]}],
         "annotations": [
             {"id": 1, "was_cancelled": False, "updated_at": "2026-01-01T10:00:00",
              "result": [_rect("cat", 5, 10, 30, 30)]},  # an older review
             {"id": 2, "was_cancelled": False, "updated_at": "2026-01-02T10:00:00",
              "result": [_rect("cat", 12, 15, 30, 30),  # moved; the dog deleted
                         _rect("dog", 50, 50, 40, 30, rotation=90.0),  # rotated about its corner: its bounds
                         _rect("bird", 118, 38, 54, 44, rid="r2"), _brush("bird", blob),  # one object, both drawn
                         {"type": "polygonlabels", "original_width": W, "original_height": H,
                          "value": {"points": [[80, 10], [95, 10], [95, 40]], "polygonlabels": ["cat"]}},
                         {"type": "choices", "value": {"choices": ["ok"]}}]}]},
        {"id": 2, "data": {"image": "/data/local-files/?d=sub/b.png"}, "annotations": [
            {"id": 3, "was_cancelled": True, "result": []}]},  # skipped
        {"id": 3, "data": {"image": "/data/local-files/?d=sub/c.png"}, "predictions": [{"result": []}]},  # not reviewed
        {"id": 4, "data": {"image": "/data/local-files/?d=sub/gone.png"}, "annotations": [{"id": 4, "result": []}]},
        {"id": 5, "data": {"image": "/data/local-files/?d=sub/d.png"}, "annotations": [{"id": 5, "result": []}]},
    ]  # fmt: skip
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    problems = Problems()
    items = labelstudio_items(export, str(root), problems)
    assert dict(problems.counts) == {"task skipped": 1, "task not reviewed": 1, "missing image": 1}
    a, d = items
    assert d.objects == () and d.image == str(root / "sub" / "d.png")  # reviewed, nothing there: a negative
    boxes = {(o.label, o.mask is not None): np.round(o.box, 3).tolist() for o in a.objects}
    assert len(a.objects) == 4 and boxes[("cat", False)] == [12.0, 15.0, 42.0, 45.0]
    assert boxes[("dog", False)] == [20.0, 50.0, 50.0, 90.0]
    assert boxes[("bird", True)] == [118.0, 38.0, 172.0, 82.0]  # the reviewed rectangle is the box...
    assert np.array_equal(next(o for o in a.objects if o.label == "bird").mask, blob)  # ... the brush the mask
    assert np.abs(np.array(boxes[("cat", True)]) - [160, 10, 190, 40]).max() <= 1.0  # the polygon, rasterized


def _rows_run(folder, rows):
    store = PartStore(folder / "predictions")
    store.prepare()
    store.write(rows_to_table(rows))


def test_label_rows_become_pseudo_labels_filtered_by_score_and_nms(tmp_path, capsys):
    Image.new("RGB", (W, H)).save(tmp_path / "x.png")
    base = {"path": str(tmp_path / "x.png"), "width": W, "height": H, "text": "", "model": "m", "seconds": 0.0}

    def o(label, box, score):
        return {"label": label, "box": box, "score": score, "mask": None}

    rows = [
        base | {"image_id": 1, "task": "detect", "prompt": "detect cat", "error": None,
                "objects": [o("cat", [10, 10, 50, 50], 0.9), o("cat", [12, 11, 50, 52], 0.8),  # a duplicate
                            o("cat", [120, 10, 150, 40], 0.2)]},  # weak
        base | {"image_id": 1, "task": "detect", "prompt": "detect dog", "error": None,
                "objects": [o("dog", [60, 20, 100, 90], 0.7)]},  # the same image's other per-class row
        base | {"image_id": 2, "task": "detect", "prompt": "detect cat", "error": "cannot decode", "objects": []},
    ]  # fmt: skip
    _rows_run(tmp_path / "run", rows)
    out = tmp_path / "pseudo.jsonl"
    assert make_records(["--predictions", str(tmp_path / "run"), "--min-score", "0.5", "--nms", "0.5",
                         "--output", str(out)]) == 0  # fmt: skip
    [record] = read_jsonl(out)
    assert record["prefix"] == "detect cat ; dog"
    assert [(p.label, [round(v) for v in p.box]) for p in parse_objects(record["suffix"], W, H)] == [
        ("cat", [10, 10, 50, 50]), ("dog", [60, 20, 100, 90])]  # fmt: skip
    assert "left out: error row left out: 1" in capsys.readouterr().out


def test_referring_tables_become_segment_records_without_labels(tmp_path):
    import pyarrow as pa

    Image.new("RGB", (W, H)).save(tmp_path / "p.png")
    mask = np.zeros((H, W), bool)
    mask[20:60, 30:90] = True
    table = pa.table({"image": ["p.png", "p.png", "p.png"],
                      "expression": ["the red car", "the red car", "a dog on the left"],
                      "box": [[30.0, 20.0, 90.0, 60.0], None, [5.0, 5.0, 25.0, 45.0]],
                      "mask": [json.dumps(mask_to_rle(mask)), json.dumps([[150, 10, 190, 10, 190, 50]]),
                               None]})  # fmt: skip
    pq.write_table(table, tmp_path / "refs.parquet")
    out = tmp_path / "refs.jsonl"
    assert make_records(["--referring", str(tmp_path / "refs.parquet"), "--task", "segment", "--vae", str(VAE),
                         "--output", str(out)]) == 0  # fmt: skip
    records = {r["prefix"]: r for r in read_jsonl(out)}
    car = records["segment the red car"]
    objects = parse_objects(car["suffix"], W, H)
    assert len(objects) == 2 and all(o.label == "" and o.seg_tokens is not None for o in objects)
    assert "segment a dog on the left" not in records  # box only: cannot be a segment record (counted)


def test_class_maps_keep_rename_and_drop_and_order_is_as_documented():
    classes = parse_class_map("person=pedestrian ; Car ;")
    assert classes == {"person": "pedestrian", "car": "Car"}
    with pytest.raises(ValueError, match="--classes"):
        parse_class_map("=x")
    item = Item("i.png", 100, 100, (Obj("car", (50, 10, 60, 20)), Obj("person", (5, 50, 9, 60)),
                                    Obj("Person", (5, 5, 9, 9)), Obj("dog", (1, 1, 3, 3))))  # fmt: skip
    builder = RecordBuilder(RecordOptions(classes=classes))
    assert builder.class_list([item]) == ["pedestrian", "Car"]
    [record] = builder.build(item, Problems()).records
    labels = [o.label for o in parse_objects(record["suffix"], 100, 100)]
    assert record["prefix"] == "detect pedestrian ; Car"
    assert labels == ["pedestrian", "pedestrian", "Car"]  # class order, then top to bottom; the dog dropped
    boxes = [tuple(o["box"]) for o in record["objects"]]
    assert boxes[:2] == [(5, 5, 9, 9), (5, 50, 9, 60)]
    random_order = RecordBuilder(RecordOptions(order="random"))
    random_order.class_list([item])
    shuffled = random_order.build(item, Problems()).records[0]
    assert shuffled["shuffle"] is True


def test_parquet_records_read_back_as_jsonl_records_do(tmp_path):
    from records import write_records
    from training.data import FileSource

    Image.new("RGB", (W, H), "red").save(tmp_path / "p.png")
    mask = np.zeros((H, W), bool)
    mask[10:30, 20:60] = True
    builder = RecordBuilder(RecordOptions(task="detect"))
    item = Item(str(tmp_path / "p.png"), W, H, (Obj("cat", (20.0, 10.0, 60.0, 30.0), mask),))
    builder.class_list([item])
    records = builder.build(item, Problems()).records
    write_records(records, tmp_path / "r.parquet")
    write_records(records, tmp_path / "r.jsonl")
    a, b = FileSource(tmp_path / "r.parquet", 0), FileSource(tmp_path / "r.jsonl", 0)
    assert a.rows[0]["objects"] == b.rows[0]["objects"] == records[0]["objects"]
    ra, rb = a.record(0), b.record(0)
    assert (ra.prefix, ra.suffix) == (rb.prefix, rb.suffix) == ("detect cat", records[0]["suffix"])
    assert ra.image.size == (W, H)
