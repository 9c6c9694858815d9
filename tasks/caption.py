"""`caption {lang}`: a short caption in the given language."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import TextResult, check_word, parse_text


@dataclass(frozen=True)
class Caption:
    lang: str = "en"
    name: ClassVar[str] = "caption"

    def __post_init__(self) -> None:
        check_word(self.lang, "language code")

    def prompt(self) -> str:
        return f"{self.name} {self.lang}"

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
