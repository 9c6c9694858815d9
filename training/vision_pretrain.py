"""Pretraining the vision tower on dense labels of the shapes data, before the whole model trains.

Why: a SigLIP tower trained from scratch only through the text decoder learns what a shape is very slowly. Probes
on this CPU (the bundled model card has the table): after 16,000 single-object captions a linear probe on the
tower's features told circles from squares and triangles *less* often than on the random initialization (48%
against 62%), while the colours were learned; trained directly on the class, the same tower reached 79% in 8,000
examples. Real PaliGemmas start from a pretrained SigLIP too. Here the tower is pretrained on labels every drawn
image has for free, one per patch (a 7 x 7 grid at 224 px / 32 px), through small linear heads that are then
thrown away:

- scenes: the class and colour of the object whose box centre lies in the patch, that box's edges (L1, in image
  fractions), and the class of the object covering the patch's centre pixel (its mask);
- words: the characters whose centres lie in the patch, left to right (up to 3 a patch), and each one's place
  in the word (first, second, ...): what an answer read left to right needs to find next.

So the tower learns shapes, colours, where objects are and what characters are, and the decoder learns to read
it. The tower's weights replace its random initialization; nothing else of the model changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .shapes import CLASSES, COLORS, SIZE, WORD_ALPHABET, draw_scene, draw_word_with_centers

CHAR_SLOTS = 3
MAX_ORDINAL = 12  # the longest word a curriculum stage allows (training.shapes.Stage)
IGNORE = -100


@dataclass
class DenseTargets:
    center_class: torch.Tensor  # long[B, N]: 0 background, 1..3 the class whose box centre is in the patch
    center_color: torch.Tensor  # long[B, N]: 0 background, 1..6
    box: torch.Tensor  # float[B, N, 4]: x0, y0, x1, y1 / SIZE of that object (NaN where none)
    cover_class: torch.Tensor  # long[B, N]: class of the object covering the patch centre pixel, 0 none
    chars: torch.Tensor  # long[B, N, CHAR_SLOTS]: 0 none, 1..34 the characters centred in the patch, left to right
    ordinals: torch.Tensor  # long[B, N, CHAR_SLOTS]: 0 none, 1..MAX_ORDINAL each of those characters' place in the word


WORD_SHARE = 0.4  # word images among the pretraining images: characters are the slowest thing to learn


def dense_example(rng: np.random.Generator, grid: int, word_share: float = WORD_SHARE):
    """One image and its per-patch labels (lists, batched by `collate_dense`)."""
    cell = SIZE / grid
    n = grid * grid
    center_class, center_color = [0] * n, [0] * n
    box = [[float("nan")] * 4 for _ in range(n)]
    cover_class = [0] * n
    chars = [[0] * CHAR_SLOTS for _ in range(n)]
    ordinals = [[0] * CHAR_SLOTS for _ in range(n)]
    if rng.random() < word_share:
        image, word, centers = draw_word_with_centers(rng)
        filled = [0] * n
        for place, (ch, (cx, cy)) in enumerate(zip(word, centers, strict=True)):
            k = int(min(max(cy, 0) // cell, grid - 1)) * grid + int(min(max(cx, 0) // cell, grid - 1))
            if filled[k] < CHAR_SLOTS:
                chars[k][filled[k]] = WORD_ALPHABET.index(ch) + 1
                ordinals[k][filled[k]] = min(place + 1, MAX_ORDINAL)
                filled[k] += 1
        center_class = center_color = cover_class = [IGNORE] * n  # a word image says nothing about shapes
    else:
        image, shapes = draw_scene(rng)
        for s in sorted(shapes, key=lambda s: (s.box[2] - s.box[0]) * (s.box[3] - s.box[1])):  # larger wins
            x0, y0, x1, y1 = s.box
            k = int(min(((y0 + y1) / 2) // cell, grid - 1)) * grid + int(min(((x0 + x1) / 2) // cell, grid - 1))
            center_class[k] = CLASSES.index(s.kind) + 1
            center_color[k] = list(COLORS).index(s.color) + 1
            box[k] = [x0 / SIZE, y0 / SIZE, x1 / SIZE, y1 / SIZE]
        for k in range(n):
            py, px = int((k // grid + 0.5) * cell), int((k % grid + 0.5) * cell)
            for s in shapes:
                if s.mask[py, px]:
                    cover_class[k] = CLASSES.index(s.kind) + 1
        chars = ordinals = [[IGNORE] * CHAR_SLOTS] * n  # and a scene says nothing about characters
    return image, (center_class, center_color, box, cover_class, chars, ordinals)


def collate_dense(labels: list[tuple]) -> DenseTargets:
    cc, col, box, cov, ch, order = zip(*labels, strict=True)
    return DenseTargets(torch.tensor(cc), torch.tensor(col), torch.tensor(box, dtype=torch.float32),
                        torch.tensor(cov), torch.tensor(ch), torch.tensor(order))  # fmt: skip


class DenseHeads(nn.Module):
    """Linear read-outs of each patch's feature; used only for pretraining."""

    def __init__(self, width: int):
        super().__init__()
        self.center_class = nn.Linear(width, len(CLASSES) + 1)
        self.center_color = nn.Linear(width, len(COLORS) + 1)
        self.box = nn.Linear(width, 4)
        self.cover_class = nn.Linear(width, len(CLASSES) + 1)
        self.chars = nn.Linear(width, CHAR_SLOTS * (len(WORD_ALPHABET) + 1))
        self.ordinals = nn.Linear(width, CHAR_SLOTS * (MAX_ORDINAL + 1))

    def loss(self, features: torch.Tensor, t: DenseTargets) -> dict[str, torch.Tensor]:
        B, N, _ = features.shape
        out = {
            "center_class": _ce(self.center_class(features), t.center_class),
            "center_color": _ce(self.center_color(features), t.center_color),
            "cover_class": _ce(self.cover_class(features), t.cover_class),
            "chars": _ce(self.chars(features).reshape(B, N * CHAR_SLOTS, -1), t.chars.reshape(B, -1)),
            "ordinals": _ce(self.ordinals(features).reshape(B, N * CHAR_SLOTS, -1), t.ordinals.reshape(B, -1)),
        }
        has_box = ~t.box[..., 0].isnan()
        if bool(has_box.any()):
            out["box"] = F.l1_loss(self.box(features)[has_box].sigmoid(), t.box[has_box]) * 10.0
        return out


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with "nothing here" (label 0) weighted down: most patches hold nothing, and an average over
    all of them would teach mostly that."""
    weight = torch.ones(logits.shape[-1], device=logits.device)
    weight[0] = BACKGROUND_WEIGHT
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), weight=weight, ignore_index=IGNORE)


BACKGROUND_WEIGHT = 0.1


@torch.no_grad()
def dense_accuracy(model, heads: DenseHeads, examples: int = 256, seed: int = 7,
                   word_share: float = WORD_SHARE) -> dict[str, float]:  # fmt: skip
    """Accuracy of the heads where there is something to see: class and colour at object centres, characters
    and their places in the word in their slots."""
    cfg = model.config.vision
    grid = cfg.image_size // cfg.patch_size
    rng = np.random.default_rng([seed, 2])
    drawn = [dense_example(rng, grid, word_share) for _ in range(examples)]
    f = model.vision_tower(model.image_processor([im for im, _ in drawn]).to(model.device))
    t = collate_dense([labels for _, labels in drawn])
    out = {}
    for name in ("center_class", "center_color", "cover_class"):
        pred, want = getattr(heads, name)(f).argmax(-1), getattr(t, name)
        real = want > 0
        if bool(real.any()):
            out[name] = float((pred[real] == want[real]).float().mean())
    B, N, _ = f.shape
    for name in ("chars", "ordinals"):
        pred, want = getattr(heads, name)(f).reshape(B, N, CHAR_SLOTS, -1).argmax(-1), getattr(t, name)
        real = want > 0
        if bool(real.any()):
            out[name] = float((pred[real] == want[real]).float().mean())
    return out


def pretrain_tower(
    model,
    examples: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    log: Callable[[dict], None] | None = None,
    log_every: int = 20,
    eval_every: int = 0,
    word_share: float = WORD_SHARE,
    bf16: bool = False,
) -> dict:
    """Train model.vision_tower in place on `examples` dense-labelled images drawn from `default_rng(seed)`
    (warm-up, then cosine to a tenth), `word_share` of them word images; returns the last losses.

    bf16: autocast the matrix products to bfloat16 (much faster on CPUs with AMX or AVX-512 bf16 units)."""
    cfg = model.config.vision
    grid = cfg.image_size // cfg.patch_size
    tower, processor = model.vision_tower, model.image_processor
    heads = DenseHeads(cfg.hidden_size)
    params = [*tower.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng([seed, 1])
    steps = max(1, examples // batch_size)
    warmup = max(1, steps // 20)
    tower.train()
    start, last = time.perf_counter(), {}
    with torch.enable_grad():
        for step in range(steps):
            scale = (step + 1) / warmup if step < warmup else 0.1 + 0.9 * 0.5 * (
                1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))  # fmt: skip
            for group in opt.param_groups:
                group["lr"] = lr * scale
            drawn = [dense_example(rng, grid, word_share) for _ in range(batch_size)]
            pixels = processor([image for image, _ in drawn]).to(model.device)
            targets = collate_dense([labels for _, labels in drawn])
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                features = tower(pixels)
            losses = heads.loss(features.float(), targets)
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if log is not None and ((step + 1) % log_every == 0 or step == steps - 1):
                last = {"vision_step": step + 1, "vision_examples": (step + 1) * batch_size,
                        **{f"vision_loss/{k}": float(v.detach()) for k, v in losses.items()},
                        "vision_minutes": (time.perf_counter() - start) / 60}  # fmt: skip
                if eval_every and (step + 1) % eval_every == 0:
                    tower.eval()
                    last["vision_accuracy"] = dense_accuracy(model, heads, examples=128, word_share=word_share)
                    tower.train()
                log(last)
    tower.eval()
    return last | {"vision_accuracy": dense_accuracy(model, heads, word_share=word_share)}
