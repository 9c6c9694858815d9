"""Replicas that answer with known objects, handed to the label job by tests that check what happens to objects
(exports, grouping) without trained weights: the model is loaded as usual, its answers are replaced."""

from __future__ import annotations

from model.generation import Generation
from pipelines.replica import Replica
from tasks import from_prompt


class PromptBoxes:
    """A backend that answers an object prompt with one box per class it names, each class at its own place
    (class k of the prompt: a box in the k-th fifth of the image, from the top); other prompts with "a picture"."""

    name = "prompt-boxes"

    def __init__(self, device):
        self.device = device

    @staticmethod
    def answer(prompt: str) -> str:
        task = from_prompt(prompt)
        if task.kind != "objects":
            return "a picture"
        parts = []
        for name in getattr(task, "classes", ()):
            k = sum(ord(c) for c in name) % 5  # the same place for a class in every prompt that names it
            y0, y1 = 200 * k + 10, 200 * k + 150
            parts.append(f"<loc{y0:04d}><loc0100><loc{y1:04d}><loc0600> {name}")
        return " ; ".join(parts)

    def generate(self, images, prompts, *, max_new_tokens, **options) -> list[Generation]:
        out = []
        for prompt in prompts:
            text = self.answer(prompt)
            tokens = [text]  # one piece: scores come out as exp(-0.2) for every object
            out.append(Generation(text, [0], tokens, [-0.2], True))
        return out


class AnswersWithBoxes(Replica):
    """A real replica (the checkpoint is loaded and warmed up) whose answers come from PromptBoxes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = PromptBoxes(self.backend.device)


class TileCorners:
    """A backend for tiled runs: every object prompt is answered with one box in the middle of the tile it is
    shown, labelled with the prompt's first class, and a tile that is almost black makes generation fail (an input
    the model cannot take)."""

    name = "tile-corners"

    def __init__(self, device):
        self.device = device

    def generate(self, images, prompts, *, max_new_tokens, **options) -> list[Generation]:
        import numpy as np

        out = []
        for image, prompt in zip(images, prompts, strict=True):
            if float(np.asarray(image).mean()) < 3.0:
                raise RuntimeError("a black tile")
            classes = getattr(from_prompt(prompt), "classes", ("thing",))
            text = f"<loc0384><loc0384><loc0640><loc0640> {classes[0]}"
            out.append(Generation(text, [0], [text], [-0.1], True))
        return out


class AnswersTiles(Replica):
    """A real replica whose answers come from TileCorners."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = TileCorners(self.backend.device)
