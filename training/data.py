"""Fine-tuning data: (image, prefix, suffix) records from JSONL, Parquet or the shapes generator, and batching.

The record format is the one big_vision and maestro use: an image, the prompt (`prefix`) and the answer
(`suffix`). JSONL lines are `{"image": "relative/or/absolute.png", "prefix": "...", "suffix": "..."}`, with
relative paths taken from the JSONL file's folder. Parquet files have `prefix` and `suffix` string columns and
an `image` column holding either a path, the encoded bytes, or a `{bytes, path}` struct as Hugging Face datasets
writes it.

A training sequence is the inference prompt (`<image>` x N, `<bos>`, prefix, newline) followed by the suffix
and `<eos>`. The prompt is the bidirectional prefix (token type 0); only suffix and `<eos>` tokens are causal
(type 1) and carry a loss, so the model learns the answer, never the question.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.image_processing import ImageProcessor
from model.tokenizer import PromptTokenizer
from storage import is_uri, read_bytes

from .augment import Augment, augment_record

IGNORE = -100


@dataclass(frozen=True)
class Record:
    image: Image.Image
    prefix: str
    suffix: str
    task: str = ""


@dataclass
class Batch:
    input_ids: torch.Tensor  # long[B, T], right-padded
    attention_mask: torch.Tensor  # bool[B, T]
    token_type_ids: torch.Tensor  # long[B, T]: 0 prefix, 1 answer
    labels: torch.Tensor  # long[B, T]: the answer's ids where they are predicted from, IGNORE elsewhere
    pixel_values: torch.Tensor  # float[B, 3, H, W]
    tasks: list[str]
    answer_index: torch.Tensor  # long[N]: flat B x T positions with a label, padded to a multiple of 64
    answer_tokens: int  # how many of them are real (the rest point at a position whose label is IGNORE)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.token_type_ids.to(device),
            self.labels.to(device),
            self.pixel_values.to(device),
            self.tasks,
            self.answer_index.to(device),
            self.answer_tokens,
        )


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the line or row."""


def _open_image(value: object, base: Path, where: str) -> Image.Image:
    try:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes | bytearray):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str) and is_uri(value):
            image = Image.open(io.BytesIO(read_bytes(value)))
        elif isinstance(value, str):
            path = Path(value)
            image = Image.open(path if path.is_absolute() else base / path)
        else:
            raise DatasetError(f"{where}: 'image' must be a path, bytes or a {{bytes, path}} struct")
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: pyarrow's filesystem errors for a URI
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{where}: cannot read the image ({e})") from e


def read_records(path: str | Path) -> list[dict]:
    """The raw rows of a .jsonl or .parquet dataset, checked for the three fields (images are opened later)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    rows: list[dict] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not valid JSON ({e})") from e
            rows.append(row | {"_where": f"{path}:{n}"})
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist()):
            rows.append(row | {"_where": f"{path} row {n}"})
    else:
        raise DatasetError(f"{path}: expected a .jsonl or .parquet file")
    for row in rows:
        for key in ("image", "prefix", "suffix"):
            if key not in row or row[key] is None:
                raise DatasetError(f"{row['_where']}: missing field {key!r}")
        for key in ("prefix", "suffix"):
            if not isinstance(row[key], str):
                raise DatasetError(f"{row['_where']}: field {key!r} must be a string")
        if isinstance(row.get("objects"), str):  # Parquet records keep their objects as a JSON string
            try:
                row["objects"] = json.loads(row["objects"])
            except json.JSONDecodeError as e:
                raise DatasetError(f"{row['_where']}: field 'objects' is not valid JSON ({e})") from None
    if not rows:
        raise DatasetError(f"{path}: no records")
    return rows


class FileSource:
    """Examples of a dataset file by index: epoch e visits the rows in the order `default_rng([seed, e])` shuffles
    them, and worker `rank` of `world` takes every world-th position. A pure function of the index, so a resumed
    run (or a background data process) continues exactly where the stream was. Augmentation (training.augment)
    draws from `default_rng([seed, epoch, row, 1])`: the same example gets the same augmentation on a resume, and
    another one the next epoch."""

    def __init__(self, path: str | Path, seed: int, rank: int = 0, world: int = 1, augment: Augment | None = None,
                 vae: str | None = None):  # fmt: skip
        augment = augment or Augment()
        self.rows = read_records(path)
        self.base = Path(path).parent
        self.seed, self.rank, self.world = seed, rank, world
        self.augment = augment
        self._order: tuple[int, np.ndarray] | None = None
        self.encoder = None
        if vae and augment.active and any(str(r["prefix"]).startswith("segment") for r in self.rows):
            from decoders.vqvae import MaskEncoder

            self.encoder = MaskEncoder.from_npz(vae)

    def record(self, index: int) -> Record:
        epoch, position = divmod(index * self.world + self.rank, len(self.rows))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.rows)))
        row_index = int(self._order[1][position])
        row = self.rows[row_index]
        image = _open_image(row["image"], self.base, row["_where"])
        suffix = row["suffix"]
        if self.augment.active or row.get("shuffle"):
            rng = np.random.default_rng([self.seed, epoch, row_index, 1])
            image, suffix = augment_record(image, row["prefix"], suffix, row.get("task") or "", row.get("objects"),
                                           bool(row.get("shuffle")), self.augment, rng, self.encoder)  # fmt: skip
        return Record(image, row["prefix"], suffix, row.get("task") or "")


def file_stream(path: str | Path, seed: int, rank: int = 0, world: int = 1) -> Iterator[Record]:
    """Endless epochs over a dataset file (see FileSource)."""
    source = FileSource(path, seed, rank, world)
    index = 0
    while True:
        yield source.record(index)
        index += 1


class ShapesSource:
    """Examples of the synthetic shapes stream by index (training/shapes.py)."""

    def __init__(self, seed: int, vae: str | None = None, stages: tuple = ()):
        from decoders.vqvae import MaskEncoder

        self.seed, self.stages = seed, stages
        self.encoder = MaskEncoder.from_npz(vae) if vae else None

    def record(self, index: int) -> Record:
        from .shapes import shapes_example

        e = shapes_example(self.seed, index, self.encoder, self.stages)
        return Record(e.image, e.prefix, e.suffix, e.task)


def encode_example(tok: PromptTokenizer, num_image_tokens: int, prefix: str, suffix: str) -> tuple[list[int], int]:
    """Ids of prompt + answer + <eos>, and the prompt's length (where the answer starts)."""
    prompt = tok.encode_prompt(prefix, num_image_tokens)
    answer = tok.tok.encode(suffix, add_special_tokens=False).ids + [tok.eos_id]
    return prompt + answer, len(prompt)


def collate(records: list[Record], tok: PromptTokenizer, processor: ImageProcessor, num_image_tokens: int) -> Batch:
    encoded = [encode_example(tok, num_image_tokens, r.prefix, r.suffix) for r in records]
    T = max(len(ids) for ids, _ in encoded)
    B = len(records)
    input_ids = torch.full((B, T), tok.pad_id, dtype=torch.long)
    valid = torch.zeros((B, T), dtype=torch.bool)
    types = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    for i, (ids, start) in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        valid[i, : len(ids)] = True
        types[i, start : len(ids)] = 1
        # The token at position t is predicted from position t - 1: the last prompt token predicts the first answer.
        labels[i, start - 1 : len(ids) - 1] = torch.tensor(ids[start:])
    pixels = processor([r.image for r in records])
    answer = torch.nonzero(labels.reshape(-1) != IGNORE)[:, 0]
    # Padding entries point at position 0 (an <image> token, whose label is always IGNORE).
    index = torch.zeros(-(-len(answer) // 64) * 64, dtype=torch.long)
    index[: len(answer)] = answer
    return Batch(input_ids, valid, types, labels, pixels, [r.task for r in records], index, len(answer))


class BatchMaker:
    """Training batch number `step`, the same every time it is asked for: examples [step * B, (step + 1) * B) of
    the source, or, with `pool` > 1, the same examples grouped by length.

    Grouping: the examples of `pool` consecutive batches are sorted by token count and cut into `pool` batches,
    which then run in an order shuffled by the pool's index. Padding to the longest row of a batch otherwise wastes
    about a third of the step on the shapes mix (answers run from 2 to 90 tokens); grouped, a batch holds rows of
    similar length and the step's cost follows the tokens that carry a loss.
    """

    def __init__(self, source, tok: PromptTokenizer, processor: ImageProcessor, num_image_tokens: int,
                 batch_size: int, pool: int = 1, seed: int = 0):  # fmt: skip
        self.source, self.tok, self.processor = source, tok, processor
        self.num_image_tokens, self.batch_size, self.pool, self.seed = num_image_tokens, batch_size, pool, seed
        self._cached: tuple[int, list[list[Record]]] | None = None

    def records(self, step: int) -> list[Record]:
        if self.pool <= 1:
            start = step * self.batch_size
            return [self.source.record(i) for i in range(start, start + self.batch_size)]
        group, slot = divmod(step, self.pool)
        if self._cached is None or self._cached[0] != group:
            size = self.pool * self.batch_size
            records = [self.source.record(i) for i in range(group * size, (group + 1) * size)]
            lengths = [len(encode_example(self.tok, self.num_image_tokens, r.prefix, r.suffix)[0]) for r in records]
            order = np.argsort(lengths, kind="stable")
            chunks = [[records[i] for i in order[k : k + self.batch_size]] for k in range(0, size, self.batch_size)]
            shuffle = np.random.default_rng([self.seed, group]).permutation(self.pool)
            self._cached = (group, [chunks[i] for i in shuffle])
        return self._cached[1][slot]

    def batch(self, step: int) -> Batch:
        return collate(self.records(step), self.tok, self.processor, self.num_image_tokens)
