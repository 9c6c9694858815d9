"""Tiled labeling (sliced inference): cut a large image into overlapping tiles, label each tile as its own
(image, prompt) pair, and merge the tiles' objects back into one list in image pixels.

PaliGemma squashes every image into one square of 224, 448 or 896 pixels, so objects of a few pixels in a large
image vanish. Tiles keep them at their size. Nothing here knows Ray or the model: the label job's replicas, the
single-image command and the benchmarks cut, label and merge with these functions.

    tile_grid      the tile boxes, laid out as supervision's InferenceSlicer lays them out
    cut_tiles      the tiles' pixels squashed to the model's size (views into the image, one tile copied at a time)
    merge_tiles    the objects of all tiles of one (image, prompt) -> one list of objects in image pixels
    MaskCrop       a mask as a crop at an offset, so that no object ever holds an H x W canvas of a huge image

Boxes are (x0, y0, x1, y1) with exclusive right and bottom edges: in whole pixels for tiles, floats for objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from rows.coco_format import label_key
from rows.schema import MaskRLE, ObjectRow

DEFAULT_OVERLAP = 0.2  # SAHI's default overlap ratio
MERGE_MODES = ("nmm", "nms")
METRICS = ("ios", "iou")

Box = tuple[int, int, int, int]
FloatBox = tuple[float, float, float, float]


def overlap_pixels(tile: int, overlap: float) -> int:
    """The overlap of neighbouring tiles in pixels: int(overlap * tile), rounded down as SAHI's get_slice_bboxes
    rounds it (supervision's InferenceSlicer takes the pixels themselves as `overlap_wh`)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"expected an overlap ratio in [0, 1) but got {overlap}")
    return int(overlap * tile)


def tile_grid(width: int, height: int, tile: int, overlap: float = DEFAULT_OVERLAP) -> list[Box]:
    """The tiles of a width x height image: InferenceSlicer(slice_wh=(tile, tile), overlap_wh=(p, p)) with
    p = overlap_pixels(tile, overlap), box for box and in its order (rows top to bottom, left to right in a row).

    Starts are 0, s, 2s, ... (stride s = tile - p) below width - tile, then width - tile itself: the last tile is
    pulled back inside the image, so every tile is tile x tile and the last one overlaps its neighbour by more
    than p. Two cases give smaller tiles, as supervision gives them: an image side no longer than the tile (one
    tile along it, as long as the image), and overlap 0 (stride = tile: tiles at 0, tile, 2 tile, ..., the last
    one clipped at the border). Odd sizes need nothing special: every start is a whole pixel.
    """
    if width < 1 or height < 1:
        raise ValueError(f"expected an image of at least 1 x 1 pixels but got {width} x {height}")
    if tile < 1:
        raise ValueError(f"expected a tile size of at least 1 pixel but got {tile}")
    stride = tile - overlap_pixels(tile, overlap)
    xs, ys = _axis_starts(width, tile, stride), _axis_starts(height, tile, stride)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one side (supervision's `_compute_axis_starts`)."""
    if size <= tile:
        return [0]
    if stride == tile:
        return list(range(0, size, stride))
    last = size - tile
    starts = list(range(0, last, stride))
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def iter_tiles(image: np.ndarray, boxes: Iterable[Box], size: int) -> Iterator[np.ndarray]:
    """uint8[H, W, 3] image + tile boxes -> uint8[size, size, 3] per tile, one at a time.

    Each tile is a view into `image` (no copy of the image); only the tile itself is copied, by Pillow, and
    squashed to size x size with the model's own bicubic resize (labeling.images.prepare's), so a tile's pixels
    are those the model would compute from the tile as an image of its own.
    """
    _check_image(image)
    height, width = image.shape[:2]
    for x0, y0, x1, y1 in boxes:
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"expected a tile inside the {width} x {height} image but got {(x0, y0, x1, y1)}")
        view = image[y0:y1, x0:x1]
        yield np.asarray(Image.fromarray(view).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def cut_tiles(image: np.ndarray, boxes: Sequence[Box], size: int) -> list[np.ndarray]:
    """iter_tiles as a list: pass the boxes of one batch at a time for a huge image, since all the tiles of a
    12,000 x 12,000 image at 224 px would weigh as much as the image again."""
    return list(iter_tiles(image, boxes, size))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected a uint8[H, W, 3] image array but got {type(image).__name__} of shape {shape}")


@dataclass(frozen=True)
class TileConfig:
    """How an image is tiled and its tiles' objects merged (the label job's --tile options).

    tile: the tile side in pixels (the label job's default: the model's resolution). overlap: a ratio of the tile
    (overlap_pixels). full_image: also label the whole image as one more pair (SAHI's "standard prediction"), so
    that objects larger than a tile are seen whole; its objects merge like those of a tile covering the image.
    merge: "nmm" (non-max merge: a group of matching objects becomes one, its box the union, its score the best
    part's, its mask the union) or "nms" (the best part alone is kept). metric, threshold: two objects of one class
    match when their intersection over the smaller box ("ios", SAHI's default) or over the union ("iou") reaches
    threshold. edge_margin: an object whose box comes within edge_margin x the tile side of an inner tile edge is
    possibly cut by it (see merge_tiles).
    """

    tile: int
    overlap: float = DEFAULT_OVERLAP
    full_image: bool = False
    merge: str = "nmm"
    metric: str = "ios"
    threshold: float = 0.5
    edge_margin: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.tile, int) or self.tile < 1:
            raise ValueError(f"expected a tile size of at least 1 pixel but got {self.tile!r}")
        overlap_pixels(self.tile, self.overlap)
        if self.merge not in MERGE_MODES:
            raise ValueError(f"expected merge to be one of {', '.join(MERGE_MODES)} but got {self.merge!r}")
        if self.metric not in METRICS:
            raise ValueError(f"expected metric to be one of {', '.join(METRICS)} but got {self.metric!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"expected a threshold in (0, 1] but got {self.threshold}")
        if not 0.0 <= self.edge_margin < 0.5:
            raise ValueError(f"expected an edge margin in [0, 0.5) but got {self.edge_margin}")

    def boxes(self, width: int, height: int) -> list[Box]:
        """The boxes to label for one image: the grid, then (with full_image) the whole image. A grid of one tile
        that is the whole image already is not repeated."""
        grid = tile_grid(width, height, self.tile, self.overlap)
        whole = (0, 0, width, height)
        return grid + [whole] if self.full_image and whole not in grid else grid


@dataclass(frozen=True, eq=False)
class MaskCrop:
    """A mask as bool[h, w] bits whose top-left pixel is (x0, y0) of the image; every pixel outside is background.

    Why not an H x W array per object, as supervision's `Detections.with_nmm` merges them: on a 12,000 x 12,000
    image one such canvas is 144 MB, and a tiled image has thousands of objects. A crop is as large as its object.
    """

    x0: int
    y0: int
    bits: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.bits, np.ndarray) or self.bits.ndim != 2 or self.bits.dtype != np.bool_:
            raise ValueError(f"expected mask bits of shape (h, w) and dtype bool but got {_describe(self.bits)}")
        if self.x0 < 0 or self.y0 < 0:
            raise ValueError(f"expected a mask offset inside the image but got ({self.x0}, {self.y0})")

    @property
    def box(self) -> Box:
        """The crop's extent (x0, y0, x1, y1) in image pixels."""
        return (self.x0, self.y0, self.x0 + self.bits.shape[1], self.y0 + self.bits.shape[0])

    @classmethod
    def tight(cls, mask: np.ndarray, x0: int = 0, y0: int = 0) -> MaskCrop:
        """bool[h, w] placed at (x0, y0) -> the crop of its set pixels alone (0 x 0 bits when none is set)."""
        mask = np.asarray(mask, dtype=bool)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            return cls(x0, y0, np.zeros((0, 0), dtype=bool))
        bits = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
        return cls(x0 + int(cols[0]), y0 + int(rows[0]), bits)

    @classmethod
    def union(cls, crops: Iterable[MaskCrop]) -> MaskCrop:
        """The OR of crops, as one crop over the extent of their set pixels."""
        crops = [c for c in crops if c.bits.any()]
        if not crops:
            return cls(0, 0, np.zeros((0, 0), dtype=bool))
        x0, y0 = min(c.x0 for c in crops), min(c.y0 for c in crops)
        x1, y1 = max(c.box[2] for c in crops), max(c.box[3] for c in crops)
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for c in crops:
            h, w = c.bits.shape
            out[c.y0 - y0 : c.y0 - y0 + h, c.x0 - x0 : c.x0 - x0 + w] |= c.bits
        return cls.tight(out, x0, y0)

    def to_rle(self, height: int, width: int) -> MaskRLE:
        """COCO RLE of the mask in a height x width image ({"size": [h, w], "counts": str}, what a row's mask holds),
        built without an H x W array: the crop's runs in column-major order become pycocotools' uncompressed RLE,
        which `frPyObjects` compresses. Parts of the crop outside the image are dropped."""
        from pycocotools import mask as mask_utils

        x0, y0 = min(self.x0, width), min(self.y0, height)
        bits = self.bits[: max(height - y0, 0), : max(width - x0, 0)]
        starts, ends = _column_runs(bits, x0, y0, height)
        edges = np.empty(2 * len(starts), dtype=np.int64)
        edges[0::2], edges[1::2] = starts, ends
        counts = np.diff(np.concatenate([[0], edges, [height * width]])).tolist()
        if len(counts) > 1 and counts[-1] == 0:
            counts.pop()  # a run that ends at the last pixel: COCO writes no empty count after it
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}

    def to_array(self, height: int, width: int) -> np.ndarray:
        """bool[height, width]: the crop pasted into a full canvas (for small images and tests)."""
        canvas = np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = self.box
        canvas[y0 : min(y1, height), x0 : min(x1, width)] = self.bits[: max(height - y0, 0), : max(width - x0, 0)]
        return canvas


def _column_runs(bits: np.ndarray, x0: int, y0: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of set pixels of a crop at (x0, y0), as indices into the image's
    column-major pixel order (COCO RLE's): pixel (x, y) is x * height + y. A run that reaches the bottom of one
    column and goes on at the top of the next is one run."""
    padded = np.zeros((bits.shape[0] + 2, bits.shape[1]), dtype=np.int8)
    padded[1:-1] = bits
    step = np.diff(padded, axis=0).T  # [w, h + 1]: +1 where a run starts at row r, -1 where one ends before r
    cols, rows = np.nonzero(step == 1)
    starts = (x0 + cols.astype(np.int64)) * height + y0 + rows
    cols, rows = np.nonzero(step == -1)
    ends = (x0 + cols.astype(np.int64)) * height + y0 + rows
    if len(starts) > 1:
        joined = ends[:-1] == starts[1:]
        starts = np.concatenate([starts[:1], starts[1:][~joined]])
        ends = np.concatenate([ends[:-1][~joined], ends[-1:]])
    return starts, ends


def _describe(value: object) -> str:
    return f"{type(value).__name__} of shape {getattr(value, 'shape', None)} and dtype {getattr(value, 'dtype', None)}"


@dataclass(frozen=True)
class TileObjects:
    """What one tile's answer gave, as merge_tiles takes it.

    box: the tile (x0, y0, x1, y1) in image pixels. objects: a row's object dicts {label, box, score, mask} with
    boxes in the pixels of `frame`; mask None, a COCO RLE dict or bool array of the frame's size (what
    label_batch's rows and ObjectsResult.masks hold), or a MaskCrop in frame pixels. frame: the (width, height) the
    objects were placed in; by default the tile's own size (label_batch called with sizes = the tiles' sizes,
    not the squashed one). A full-image pass of a huge image may be placed in a smaller frame and is scaled up.
    """

    box: Box
    objects: Sequence[Mapping[str, Any]]
    frame: tuple[int, int] | None = None


@dataclass(frozen=True, eq=False)
class Part:
    """One object as one tile saw it, in image pixels. cut: whether its box comes within the edge margin of an
    inner edge of its tile (one that is not the image border), on the (left, top, right, bottom). whole: whether
    it comes from the whole-image pass (a tile that is the image, beside others)."""

    label: str
    key: str  # rows.label_key(label): objects merge only with objects of an equal key
    box: FloatBox
    score: float | None
    mask: MaskCrop | None
    tile: Box
    cut: tuple[bool, bool, bool, bool]
    whole: bool = False


def tile_parts(tile: TileObjects, width: int, height: int, edge_margin: float, whole: bool = False) -> list[Part]:
    """One tile's objects -> Parts in image pixels: boxes clipped to the frame, scaled to the tile and moved to
    its offset; masks cropped to their set pixels and moved likewise. whole: the tile is the whole-image pass."""
    tx0, ty0, tx1, ty1 = tile.box
    fw, fh = tile.frame or (tx1 - tx0, ty1 - ty0)
    sx, sy = (tx1 - tx0) / fw, (ty1 - ty0) / fh
    parts = []
    for obj in tile.objects:
        x0, y0, x1, y1 = (float(v) for v in obj["box"])
        x0, x1 = (min(max(v, 0.0), fw) for v in (x0, x1))
        y0, y1 = (min(max(v, 0.0), fh) for v in (y0, y1))
        box = (tx0 + x0 * sx, ty0 + y0 * sy, tx0 + x1 * sx, ty0 + y1 * sy)
        mask = _frame_mask(obj.get("mask"), fw, fh)
        if mask is not None:
            mask = _placed(mask, tile.box, sx, sy)
        label = str(obj["label"])
        score = None if obj.get("score") is None else float(obj["score"])
        cut = _cut_sides(box, tile.box, width, height, edge_margin)
        parts.append(Part(label, label_key(label), box, score, mask, tuple(tile.box), cut, whole))  # type: ignore[arg-type]
    return parts


def _frame_mask(mask: object, fw: int, fh: int) -> MaskCrop | None:
    """A tile object's mask (None, COCO RLE, bool array or MaskCrop) -> a MaskCrop in frame pixels."""
    if mask is None or isinstance(mask, MaskCrop):
        return mask
    if isinstance(mask, Mapping):
        from pycocotools import mask as mask_utils

        counts = mask["counts"]
        rle = {"size": list(mask["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        mask = mask_utils.decode(rle).astype(bool)
    mask = np.asarray(mask)
    if mask.shape != (fh, fw):
        raise ValueError(f"expected a mask of the tile's size {(fh, fw)} (height, width) but got {mask.shape}")
    return MaskCrop.tight(mask.astype(bool))


def _placed(mask: MaskCrop, tile: Box, sx: float, sy: float) -> MaskCrop:
    """A crop in frame pixels -> the crop in image pixels (resized, nearest, when the frame is not the tile)."""
    if (sx == 1.0 and sy == 1.0) or not mask.bits.size:
        return MaskCrop(tile[0] + mask.x0, tile[1] + mask.y0, mask.bits)
    x0, y0, x1, y1 = mask.box
    left, top = round(x0 * sx), round(y0 * sy)
    size = (max(round(x1 * sx) - left, 1), max(round(y1 * sy) - top, 1))
    bits = np.asarray(Image.fromarray(mask.bits).resize(size, Image.Resampling.NEAREST), dtype=bool)
    return MaskCrop(tile[0] + left, tile[1] + top, bits)


def _cut_sides(box: FloatBox, tile: Box, width: int, height: int, margin: float) -> tuple[bool, bool, bool, bool]:
    tx0, ty0, tx1, ty1 = tile
    mx, my = margin * (tx1 - tx0), margin * (ty1 - ty0)
    return (
        tx0 > 0 and box[0] <= tx0 + mx,
        ty0 > 0 and box[1] <= ty0 + my,
        tx1 < width and box[2] >= tx1 - mx,
        ty1 < height and box[3] >= ty1 - my,
    )


def merge_tiles(tiles: Sequence[TileObjects], width: int, height: int, config: TileConfig) -> list[ObjectRow]:
    """The objects of all tiles of one (image, prompt) -> one list of objects in image pixels (rows.ObjectRow:
    label, box [x0, y0, x1, y1], score, mask as COCO RLE of the whole image or None).

    Objects of one class (equal rows.label_key) are grouped greedily, best score first, as SAHI's greedy NMM
    groups them: the best object left takes every other that matches it. Two objects match when
    (a) their boxes overlap by config.metric >= config.threshold (intersection over the smaller box, 0.5:
    SAHI's defaults), or
    (b) one of them is possibly cut by an inner edge of its tile (Part.cut) and the other's tile reaches across
    that edge, and their boxes, clipped to the region both tiles see, overlap by the same measure. Both tiles see
    that region whole, so the two halves of an object cut by the edge agree there even when the halves overlap
    too little for (a); two distinct neighbours do not overlap there and stay two.
    A group also grows through (b) from any member, not only the best one, so that an object cut by several
    tiles comes back whole. Between an object of the whole-image pass (a tile that is the image, beside others)
    and one of a tile, both rules measure by IoU whatever config.metric says: unlike SAHI, which keeps IOS,
    because PaliGemma's answer about the squashed image often boxes a cluster of small objects as one, and by
    IOS that box would swallow every object the tiles found inside it.
    With merge "nmm" a group becomes one object: the union of its boxes, the best score, the OR of its masks; with
    "nms" the best object alone is kept.
    """
    whole = (0, 0, width, height)
    passes = len(tiles) > 1
    parts = [p for t in tiles for p in tile_parts(t, width, height, config.edge_margin, passes and t.box == whole)]
    by_class: dict[str, list[Part]] = defaultdict(list)
    for p in parts:
        by_class[p.key].append(p)
    out: list[ObjectRow] = []
    for same in by_class.values():
        for group in group_parts(same, config):
            out.append(_merged(group, config.merge, width, height))
    return out


def group_parts(parts: Sequence[Part], config: TileConfig) -> list[list[Part]]:
    """Parts of one class -> groups of the parts of one object each, the best part first (see merge_tiles)."""
    order = sorted(range(len(parts)), key=lambda i: (-_score(parts[i]), -_area(parts[i].box), i))
    cells = _Cells([p.box for p in parts], config.tile)
    taken = [False] * len(parts)
    groups = []
    for best in order:
        if taken[best]:
            continue
        taken[best] = True
        group, todo = [best], [best]
        while todo:
            member = todo.pop()
            for j in cells.near(parts[member].box):
                if taken[j] or parts[j].key != parts[member].key:
                    continue
                if _matches(parts[member], parts[j], config, first=member == best):
                    taken[j] = True
                    group.append(j)
                    todo.append(j)
        groups.append([parts[i] for i in group])
    return groups


def _matches(a: Part, b: Part, config: TileConfig, first: bool) -> bool:
    """Rule (a) of merge_tiles, for the group's best part only, or rule (b), for any member."""
    if first and _overlap(a.box, b.box, _metric(a, b, config)) >= config.threshold:
        return True
    return _cut_match(a, b, config)


def _metric(a: Part, b: Part, config: TileConfig) -> str:
    """IoU between an object of the whole-image pass and one of a tile, the configured measure otherwise: the
    whole image squashed often gives one box around a cluster of small objects, which by IOS would swallow every
    object the tiles found inside it."""
    return "iou" if a.whole != b.whole else config.metric


def _cut_match(a: Part, b: Part, config: TileConfig) -> bool:
    """Rule (b) of merge_tiles: a or b possibly cut by an edge the other's tile reaches across, and the two
    overlapping enough inside the region both tiles see."""
    if a.tile == b.tile or not (_faces(a, b.tile) or _faces(b, a.tile)):
        return False
    shared = _intersection(a.tile, b.tile)
    if shared is None:
        return False
    ca, cb = _intersection(a.box, shared), _intersection(b.box, shared)
    return ca is not None and cb is not None and _overlap(ca, cb, _metric(a, b, config)) >= config.threshold


def _faces(part: Part, other: Box) -> bool:
    """Whether the part is possibly cut on a side where the other tile goes on beyond the part's tile."""
    left, top, right, bottom = part.cut
    t = part.tile
    return (
        (left and other[0] < t[0])
        or (top and other[1] < t[1])
        or (right and other[2] > t[2])
        or (bottom and other[3] > t[3])
    )


def _merged(group: list[Part], mode: str, width: int, height: int) -> ObjectRow:
    """A group -> one object: the best part's label; box, score and mask by the merge mode."""
    best = group[0]
    if mode == "nms":
        group = [best]
    scores = [p.score for p in group if p.score is not None]
    masks = [p.mask for p in group if p.mask is not None]
    box = [min(p.box[0] for p in group), min(p.box[1] for p in group)]
    box += [max(p.box[2] for p in group), max(p.box[3] for p in group)]
    mask = MaskCrop.union(masks).to_rle(height, width) if masks else None
    return {"label": best.label, "box": [float(v) for v in box], "score": max(scores) if scores else None,
            "mask": mask}  # fmt: skip


def _score(part: Part) -> float:
    return -np.inf if part.score is None else part.score


def _area(box: Sequence[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _intersection(a: Sequence[float], b: Sequence[float]) -> FloatBox | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _overlap(a: Sequence[float], b: Sequence[float], metric: str) -> float:
    """Intersection over the smaller box ("ios") or over the union ("iou"); 0 for boxes without area."""
    inter = _intersection(a, b)
    if inter is None:
        return 0.0
    i, area_a, area_b = _area(inter), _area(a), _area(b)
    if metric == "ios":
        return i / min(area_a, area_b)
    return i / (area_a + area_b - i)


class _Cells:
    """Boxes by the grid cells (of the tile's size) they cover, so that a part is compared only with parts whose
    boxes can meet it: a 12,000 px image in 224 px tiles has some 4,400 tiles and tens of thousands of parts,
    too many to compare all pairs."""

    def __init__(self, boxes: Sequence[Sequence[float]], cell: int):
        self.cell = cell
        self.cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, box in enumerate(boxes):
            for key in self._span(box):
                self.cells[key].append(i)

    def _span(self, box: Sequence[float]) -> Iterator[tuple[int, int]]:
        c = self.cell
        for cy in range(int(box[1] // c), int(box[3] // c) + 1):
            for cx in range(int(box[0] // c), int(box[2] // c) + 1):
                yield cx, cy

    def near(self, box: Sequence[float]) -> list[int]:
        """Indices of the boxes sharing a cell with `box`, in index order."""
        found = {i for key in self._span(box) for i in self.cells.get(key, ())}
        return sorted(found)
