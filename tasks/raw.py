"""A free prompt, e.g. a referring expression for a fine-tuned checkpoint ("the red car on the left").

The output may be plain text or objects (big_vision's referring-segmentation targets are 4 locs + 16 segs with
no label), so the result holds both: `raw` is the generated text and `objects` whatever `<loc>` groups it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import ObjectsResult, check_line, parse_objects_result


@dataclass(frozen=True)
class Raw:
    prompt_text: str
    name: ClassVar[str] = "raw"

    def __post_init__(self) -> None:
        check_line(self.prompt_text, "prompt")

    def prompt(self) -> str:
        return self.prompt_text

    def parse(
        self,
        text: str,
        *,
        width: int | None = None,
        height: int | None = None,
        tokens: Sequence[str] | None = None,
        logprobs: Sequence[float] | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> ObjectsResult:
        return parse_objects_result(
            text, width=width, height=height, tokens=tokens, logprobs=logprobs, mask_decoder=mask_decoder
        )
