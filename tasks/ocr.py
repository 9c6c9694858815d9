"""`ocr`: the text in the image. The prompt has no language option; inner whitespace of the result is kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import TextResult, parse_text


@dataclass(frozen=True)
class Ocr:
    name: ClassVar[str] = "ocr"

    def prompt(self) -> str:
        return "ocr"

    def parse(
        self,
        text: str,
        *,
        width: int | None = None,
        height: int | None = None,
        tokens: Sequence[str] | None = None,
        logprobs: Sequence[float] | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> TextResult:
        return parse_text(text, tokens, logprobs)
