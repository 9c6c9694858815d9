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
