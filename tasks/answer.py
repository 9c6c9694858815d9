"""`answer {lang} {question}`: visual question answering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import TextResult, check_line, check_word, parse_text


@dataclass(frozen=True)
class Answer:
    question: str
    lang: str = "en"
    name: ClassVar[str] = "answer"

    def __post_init__(self) -> None:
        check_word(self.lang, "language code")
        check_line(self.question, "question")

    def prompt(self) -> str:
        return f"answer {self.lang} {self.question.strip()}"

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
