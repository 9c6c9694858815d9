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

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.token_type_ids.to(device),
            self.labels.to(device),
            self.pixel_values.to(device),
            self.tasks,
        )


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the line or row."""


def _open_image(value: object, base: Path, where: str) -> Image.Image:
    try:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes | bytearray):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            path = Path(value)
            image = Image.open(path if path.is_absolute() else base / path)
        else:
            raise DatasetError(f"{where}: 'image' must be a path, bytes or a {{bytes, path}} struct")
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError) as e:
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
    if not rows:
        raise DatasetError(f"{path}: no records")
    return rows


def file_stream(path: str | Path, seed: int, rank: int = 0, world: int = 1) -> Iterator[Record]:
    """Endless epochs over a dataset file, reshuffled each epoch; worker `rank` of `world` takes every world-th."""
    rows = read_records(path)
    base = Path(path).parent
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(rows))[rank::world]:
            row = rows[i]
            image = _open_image(row["image"], base, row["_where"])
            yield Record(image, row["prefix"], row["suffix"], row.get("task", ""))


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
    return Batch(input_ids, valid, types, labels, pixels, [r.task for r in records])
