"""A free prompt, e.g. a referring expression for a fine-tuned checkpoint ("the red car on the left").

The output may be plain text or objects (big_vision's referring-segmentation targets are 4 locs + 16 segs with
no label), so the result holds both: `raw` is the generated text and `objects` whatever `<loc>` groups it had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.base import ObjectsTask, check_line


@dataclass(frozen=True)
class Raw(ObjectsTask):
    prompt_text: str
    name: ClassVar[str] = "raw"

    def __post_init__(self) -> None:
        check_line(self.prompt_text, "prompt")

    def prompt(self) -> str:
        return self.prompt_text
