"""labeling.tiles: the grid against supervision's InferenceSlicer, cutting, mask crops and their RLE, merging."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from decoders import mask_to_rle, rle_to_mask
from labeling.images import prepare
from labeling.tiles import (
    MaskCrop,
    TileConfig,
    TileObjects,
    cut_tiles,
    iter_tiles,
    merge_tiles,
    overlap_pixels,
    tile_grid,
    tile_parts,
)


def slicer_grid(width: int, height: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """The slices supervision's InferenceSlicer cuts, read through its public API: the image holds each pixel's
    own (x, y), so a callback learns where every slice it is given came from."""
    import supervision as sv

    image = np.zeros((height, width, 2), dtype=np.int32)
    image[..., 0], image[..., 1] = np.arange(width)[None, :], np.arange(height)[:, None]
    seen = []

    def record(piece: np.ndarray) -> sv.Detections:
        x0, y0 = int(piece[0, 0, 0]), int(piece[0, 0, 1])
        seen.append((x0, y0, x0 + piece.shape[1], y0 + piece.shape[0]))
        return sv.Detections.empty()

    sv.InferenceSlicer(record, slice_wh=tile, overlap_wh=overlap_pixels(tile, overlap), thread_workers=1)(image)
    return seen


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [
        (896, 896, 224, 0.2),  # the benchmark's scenes: 5 x 5 tiles, the last row and column pulled back inside
        (1001, 777, 224, 0.2),  # odd sizes, not square
        (100, 50, 224, 0.2),  # an image smaller than a tile: one tile, as large as the image
        (300, 100, 224, 0.2),  # wider than a tile, lower than one: one row of short tiles
        (500, 100, 224, 0.0),  # no overlap: stride = tile, the last tile clipped at the border
        (225, 224, 224, 0.2),  # one pixel more than a tile: a second tile shifted by one pixel
        (301, 299, 64, 0.5),  # half overlap, odd sizes
        (1000, 600, 448, 0.25),  # 448-px tiles
        (333, 333, 100, 0.29),  # 0.29 * 100 rounds down to 28 px, as SAHI rounds it
        (224, 224, 224, 0.2),  # exactly one tile
    ],
)
def test_grid_equals_inference_slicer(width: int, height: int, tile: int, overlap: float) -> None:
    assert tile_grid(width, height, tile, overlap) == slicer_grid(width, height, tile, overlap)


def test_grid_of_a_huge_image_is_every_tile_full_size() -> None:
    grid = tile_grid(12_000, 12_000, 224, 0.2)
    assert len(grid) == 67 * 67  # starts 0, 180, ..., 11,700 and then 11,776
    assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in grid} == {(224, 224)}
    assert max(x1 for _, _, x1, _ in grid) == 12_000


def test_overlap_is_a_ratio_of_the_tile_rounded_down() -> None:
    assert overlap_pixels(224, 0.2) == 44
    assert overlap_pixels(224, 0.0) == 0
    with pytest.raises(ValueError, match="overlap ratio"):
        overlap_pixels(224, 1.0)


def test_config_adds_the_whole_image_once_and_rejects_bad_values() -> None:
    assert TileConfig(tile=224, full_image=True).boxes(404, 224)[-1] == (0, 0, 404, 224)
    assert TileConfig(tile=224, full_image=True).boxes(100, 100) == [(0, 0, 100, 100)]  # one tile is the image
    for bad in (
        {"tile": 0},
        {"tile": 224, "merge": "wbf"},
        {"tile": 224, "metric": "dice"},
        {"tile": 224, "threshold": 0},
    ):
        with pytest.raises(ValueError, match="expected"):
            TileConfig(**bad)


# Cutting


def test_a_tile_is_the_models_squash_of_that_part_of_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(301, 403, 3), dtype=np.uint8)
    whole, part = cut_tiles(image, [(0, 0, 403, 301), (10, 20, 234, 244)], 224)
    assert whole.shape == part.shape == (224, 224, 3) and whole.dtype == np.uint8
    want = Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(whole, np.asarray(want))
    np.testing.assert_array_equal(part, np.asarray(Image.fromarray(image[20:244, 10:234].copy())))


def test_a_tile_is_what_prepare_makes_of_it_as_an_image(tmp_path) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(180, 250, 3), dtype=np.uint8)
    Image.fromarray(image[30:150, 40:200]).save(tmp_path / "tile.png")
    (tile,) = cut_tiles(image, [(40, 30, 200, 150)], 96)
    np.testing.assert_array_equal(tile, prepare({"path": str(tmp_path / "tile.png")}, 96)["pixels"])


def test_cutting_a_huge_image_copies_one_tile_at_a_time() -> None:
    image = np.zeros((12_000, 12_000, 3), dtype=np.uint8)  # 432 MB, untouched pages
    boxes = tile_grid(12_000, 12_000, 224, 0.2)[::10]  # every tenth tile: the first and last rows among them
    tracemalloc.start()
    try:
        count = sum(1 for tile in iter_tiles(image, boxes, 224) if tile.shape == (224, 224, 3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(boxes) == 449
    assert peak < 2_000_000  # measured: about 0.5 MB (a few tiles of 150 KB); the image is 432 MB


def test_cutting_rejects_a_tile_outside_the_image_and_a_non_rgb_array() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="inside"):
        cut_tiles(image, [(0, 0, 11, 10)], 8)
    with pytest.raises(ValueError, match="uint8"):
        cut_tiles(image.astype(np.float32), [(0, 0, 10, 10)], 8)


# Mask crops and their RLE


@pytest.mark.parametrize(
    ("height", "width", "x0", "y0", "shape"),
    [
        (37, 53, 5, 7, (10, 12)),  # inside
        (37, 53, 0, 0, (37, 53)),  # the whole image: runs go on from the bottom of a column to the next's top
        (37, 53, 40, 0, (37, 13)),  # full height at the right border
        (37, 53, 0, 30, (7, 20)),  # at the bottom border
        (1, 1, 0, 0, (1, 1)),  # one pixel
    ],
)
def test_crop_rle_round_trips_and_equals_the_full_canvas_encoding(height, width, x0, y0, shape) -> None:
    rng = np.random.default_rng(height * width + x0)
    for density in (0.0, 0.3, 0.9, 1.0):
        crop = MaskCrop(x0, y0, rng.random(shape) < density)
        canvas = crop.to_array(height, width)
        rle = crop.to_rle(height, width)
        assert rle == mask_to_rle(canvas)  # COCO RLE is canonical: the same string as from the full array
        np.testing.assert_array_equal(rle_to_mask(rle), canvas)


def test_tight_crop_and_union_keep_only_the_set_pixels() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 10:12] = True
    crop = MaskCrop.tight(mask, 100, 200)
    assert crop.box == (110, 205, 112, 209) and crop.bits.all()
    other = MaskCrop(111, 207, np.ones((4, 4), dtype=bool))
    union = MaskCrop.union([crop, other, MaskCrop.tight(np.zeros((3, 3), dtype=bool))])
    assert union.box == (110, 205, 115, 211)
    np.testing.assert_array_equal(union.to_array(220, 130), crop.to_array(220, 130) | other.to_array(220, 130))


# Merging. The scenes are 404 x 224 (two 224-px tiles overlapping by 44 px: x 0-224 and 180-404) unless said.

WIDTH, HEIGHT = 404, 224
CONFIG = TileConfig(tile=224)


def seen_by(tile, box, label="square", score=0.9, mask=None) -> dict | None:
    """What a perfect model answers for one object in one tile: the part of its box (and mask) inside the tile,
    in tile pixels; None when the object is not in the tile."""
    tx0, ty0, tx1, ty1 = tile
    x0, y0, x1, y1 = max(box[0], tx0), max(box[1], ty0), min(box[2], tx1), min(box[3], ty1)
    if x1 <= x0 or y1 <= y0:
        return None
    part = None if mask is None else mask[ty0:ty1, tx0:tx1]
    return {"label": label, "box": [x0 - tx0, y0 - ty0, x1 - tx0, y1 - ty0], "score": score, "mask": part}


def label_tiles(grid, objects, masks=None, scores=None, labels=None) -> list[TileObjects]:
    """Every tile's answer about the objects (boxes in image pixels), as a perfect model would give it."""
    out = []
    for t, tile in enumerate(grid):
        seen = []
        for i, box in enumerate(objects):
            score = scores[i][t] if scores else 0.9
            o = seen_by(tile, box, labels[i] if labels else "square", score, None if masks is None else masks[i])
            if o is not None:
                seen.append(o)
        out.append(TileObjects(tile, seen))
    return out


def disc(cx: float, cy: float, r: float, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def test_an_object_cut_in_two_by_a_tile_edge_comes_back_whole() -> None:
    grid = tile_grid(WIDTH, HEIGHT, 224)
    big = (100, 50, 300, 150)  # each tile sees a part; the parts overlap by 44 / 120 of the smaller: below 0.5
    (merged,) = merge_tiles(label_tiles(grid, [big]), WIDTH, HEIGHT, CONFIG)
    assert merged["box"] == [100.0, 50.0, 300.0, 150.0]


def test_the_cut_object_is_one_that_overlap_alone_does_not_merge() -> None:
    """The case above is a real one: supervision's non-max merge by intersection over the smaller box (SAHI's
    default) leaves the two halves apart."""
    import supervision as sv

    halves = sv.Detections(xyxy=np.array([[100, 50, 224, 150], [180, 50, 300, 150]], float),
                           confidence=np.array([0.9, 0.8]), class_id=np.array([0, 0]))  # fmt: skip
    assert len(halves.with_nmm(threshold=0.5, overlap_metric=sv.OverlapMetric.IOS)) == 2


@pytest.mark.parametrize(
    "objects",
    [
        [(150, 60, 200, 110), (205, 60, 255, 110)],  # side by side across the edge, one in the overlap
        [(120, 20, 260, 90), (120, 100, 260, 200)],  # one above the other, both cut by both tiles' edges
        [(170, 30, 215, 80), (190, 85, 235, 130)],  # diagonal neighbours in the overlap band
    ],
)
def test_two_distinct_neighbours_of_one_class_stay_two(objects) -> None:
    merged = merge_tiles(label_tiles(tile_grid(WIDTH, HEIGHT, 224), objects), WIDTH, HEIGHT, CONFIG)
    assert sorted(o["box"] for o in merged) == sorted([float(v) for v in b] for b in objects)


def test_an_object_cut_by_four_tiles_comes_back_whole() -> None:
    grid = tile_grid(404, 404, 224)
    assert len(grid) == 4
    merged = merge_tiles(label_tiles(grid, [(150, 140, 260, 250)]), 404, 404, CONFIG)
    assert [o["box"] for o in merged] == [[150.0, 140.0, 260.0, 250.0]]


def test_an_object_longer_than_two_tiles_comes_back_whole() -> None:
    """Three tiles see parts of it; the first and the last share no pixel, so they join through the middle one
    whichever part scores best."""
    width = 584
    grid = tile_grid(width, HEIGHT, 224)
    assert len(grid) == 3
    for best in range(3):
        scores = [[0.9 if t == best else 0.5 for t in range(3)]]
        merged = merge_tiles(label_tiles(grid, [(20, 80, 570, 120)], scores=scores), width, HEIGHT, CONFIG)
        assert [o["box"] for o in merged] == [[20.0, 80.0, 570.0, 120.0]]


def test_a_mask_across_a_tile_edge_comes_back_as_one_mask() -> None:
    whole = disc(202, 110, 60)
    box = (142, 50, 262, 170)
    (merged,) = merge_tiles(label_tiles(tile_grid(WIDTH, HEIGHT, 224), [box], masks=[whole]), WIDTH, HEIGHT, CONFIG)
    assert merged["mask"]["size"] == [HEIGHT, WIDTH]
    np.testing.assert_array_equal(rle_to_mask(merged["mask"]), whole)
    assert merged["box"] == [142.0, 50.0, 262.0, 170.0]


def test_masks_given_as_rle_of_the_tile_merge_alike() -> None:
    """label_batch's rows hold each tile's masks as COCO RLE of the tile's size: they are read as such."""
    whole = disc(202, 110, 60)
    tiles = label_tiles(tile_grid(WIDTH, HEIGHT, 224), [(142, 50, 262, 170)], masks=[whole])
    as_rle = [TileObjects(t.box, [o | {"mask": mask_to_rle(o["mask"])} for o in t.objects]) for t in tiles]
    (merged,) = merge_tiles(as_rle, WIDTH, HEIGHT, CONFIG)
    np.testing.assert_array_equal(rle_to_mask(merged["mask"]), whole)


def test_nms_keeps_the_best_part_alone() -> None:
    grid = tile_grid(WIDTH, HEIGHT, 224)
    whole = disc(202, 110, 60)
    tiles = label_tiles(grid, [(142, 50, 262, 170)], masks=[whole], scores=[[0.6, 0.8]])
    (kept,) = merge_tiles(tiles, WIDTH, HEIGHT, TileConfig(tile=224, merge="nms"))
    assert kept["box"] == [180.0, 50.0, 262.0, 170.0]  # the right tile's part: the best score
    assert kept["score"] == 0.8
    np.testing.assert_array_equal(rle_to_mask(kept["mask"]), whole & (np.arange(WIDTH) >= 180)[None, :])


def test_the_merged_score_is_the_best_parts_and_missing_scores_are_no_scores() -> None:
    grid = tile_grid(WIDTH, HEIGHT, 224)
    (merged,) = merge_tiles(label_tiles(grid, [(100, 50, 300, 150)], scores=[[0.3, 0.7]]), WIDTH, HEIGHT, CONFIG)
    assert merged["score"] == 0.7
    (unscored,) = merge_tiles(label_tiles(grid, [(100, 50, 300, 150)], scores=[[None, None]]), WIDTH, HEIGHT, CONFIG)
    assert unscored["score"] is None


def test_labels_of_different_classes_never_merge_and_equal_keys_do() -> None:
    tile = (0, 0, 224, 224)
    same_box = [{"label": name, "box": [10, 10, 60, 60], "score": 0.9, "mask": None} for name in ("circle", "square")]
    assert len(merge_tiles([TileObjects(tile, same_box)], 224, 224, CONFIG)) == 2
    spelled = [
        {"label": name, "box": [10, 10, 60, 60], "score": s, "mask": None}
        for name, s in (("Circle", 0.5), ("circle ", 0.9))
    ]
    (one,) = merge_tiles([TileObjects(tile, spelled)], 224, 224, CONFIG)
    assert one["label"] == "circle " and one["score"] == 0.9  # the best part's spelling


def test_distinct_classes_across_an_edge_stay_apart() -> None:
    grid = tile_grid(WIDTH, HEIGHT, 224)
    tiles = label_tiles(grid, [(100, 50, 300, 150), (100, 50, 300, 150)], labels=["circle", "square"])
    merged = merge_tiles(tiles, WIDTH, HEIGHT, CONFIG)
    assert sorted((o["label"], o["box"]) for o in merged) == [("circle", [100.0, 50.0, 300.0, 150.0]),
                                                              ("square", [100.0, 50.0, 300.0, 150.0])]  # fmt: skip


def test_the_full_image_pass_merges_like_a_tile_covering_the_image() -> None:
    """The whole image, labeled in a frame of a quarter of its size (as a huge image's full pass may be), sees a
    large object the tiles see only in parts: one object, the parts' union."""
    cfg = TileConfig(tile=224, full_image=True)
    boxes = cfg.boxes(WIDTH, HEIGHT)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[40:200, 20:380] = True
    tiles = label_tiles(boxes[:-1], [(20, 40, 380, 200)], masks=[mask])
    small = np.asarray(Image.fromarray(mask).resize((101, 56), Image.Resampling.NEAREST))
    full = {"label": "square", "box": [5, 10, 95, 50], "score": 0.95, "mask": small}
    tiles.append(TileObjects(boxes[-1], [full], frame=(101, 56)))
    (merged,) = merge_tiles(tiles, WIDTH, HEIGHT, cfg)
    assert merged["score"] == 0.95
    assert merged["box"] == [20.0, 40.0, 380.0, 200.0]
    assert abs(int(rle_to_mask(merged["mask"]).sum()) - int(mask.sum())) < 0.02 * mask.sum()


def test_a_whole_image_box_around_a_cluster_does_not_swallow_the_tiles_objects() -> None:
    """The squashed whole image often gets one box around many small objects: by IOS (the grid's measure) it
    would take them all in; whole-image objects are measured against tile objects by IoU, so all stay."""
    cfg = TileConfig(tile=224, full_image=True)
    boxes = cfg.boxes(WIDTH, HEIGHT)
    small = [(30, 30, 60, 60), (100, 40, 130, 70), (170, 30, 200, 60), (250, 50, 280, 80), (40, 120, 70, 150)]
    tiles = label_tiles(boxes[:-1], small, scores=[[0.5] * 2] * len(small))
    cluster = {"label": "square", "box": [20, 20, 300, 170], "score": 0.9, "mask": None}
    tiles.append(TileObjects(boxes[-1], [cluster]))
    merged = merge_tiles(tiles, WIDTH, HEIGHT, cfg)
    assert sorted(o["box"] for o in merged) == sorted(
        [[20.0, 20.0, 300.0, 170.0]] + [[float(v) for v in b] for b in small]
    )


def test_tile_parts_place_boxes_in_image_pixels_and_flag_inner_edges() -> None:
    objects = [{"label": "a", "box": box, "score": 1.0, "mask": None} for box in ([0, 10, 50, 224], [100, 20, 150, 80])]
    tile = TileObjects((180, 0, 404, 224), objects)
    cut, inside = tile_parts(tile, WIDTH, HEIGHT, 0.05)
    assert cut.box == (180.0, 10.0, 230.0, 224.0)
    assert cut.cut == (True, False, False, False)  # left is an inner edge; the bottom is the image's border
    assert inside.cut == (False, False, False, False)


def test_a_mask_of_the_wrong_size_is_refused() -> None:
    tile = TileObjects(
        (0, 0, 224, 224), [{"label": "a", "box": [0, 0, 5, 5], "score": 1.0, "mask": np.ones((5, 5), bool)}]
    )
    with pytest.raises(ValueError, match="tile's size"):
        merge_tiles([tile], 224, 224, CONFIG)


def test_a_huge_image_merges_without_full_size_arrays() -> None:
    """12,000 x 12,000 px, 4,489 tiles of 224 px, 1,600 masked squares of 40 px on a lattice (each seen by one
    to four tiles, many cut): every square comes back once, with its box and mask, and nothing as large as the
    image (a bool canvas is 144 MB) is ever built."""
    size, lattice = 12_000, range(150, 12_000, 300)
    grid = tile_grid(size, size, 224)
    squares = [(x, y, x + 40, y + 40) for y in lattice for x in lattice]
    tiles = []
    for tile in grid:
        xs = [x for x in lattice if x < tile[2] and x + 40 > tile[0]]
        ys = [y for y in lattice if y < tile[3] and y + 40 > tile[1]]
        seen = [seen_by(tile, (x, y, x + 40, y + 40)) for y in ys for x in xs]
        for o in seen:
            x0, y0, x1, y1 = o["box"]
            o["mask"] = MaskCrop(x0, y0, np.ones((y1 - y0, x1 - x0), dtype=bool))  # in tile pixels
        tiles.append(TileObjects(tile, seen))
    assert sum(len(t.objects) for t in tiles) > 2 * len(squares)
    tracemalloc.start()
    try:
        merged = merge_tiles(tiles, size, size, CONFIG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # measured: about 4 MB
    assert sorted(tuple(int(v) for v in o["box"]) for o in merged) == sorted(squares)
    from pycocotools import mask as mask_utils

    rles = [{"size": o["mask"]["size"], "counts": o["mask"]["counts"].encode()} for o in merged]
    # Read from the RLE, never decoded to 12,000 x 12,000; one at a time, as pycocotools' area() of 256 or more
    # RLEs at once overflows a uint8 under NumPy 2.
    assert {int(mask_utils.area(r)) for r in rles} == {1600}
    boxes = [mask_utils.toBbox(r) for r in rles]
    assert sorted(tuple(int(v) for v in (x, y, x + w, y + h)) for x, y, w, h in boxes) == sorted(squares)
