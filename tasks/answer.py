"""`answer {lang} {question}`: visual question answering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.base import TextTask, check_line, check_word


@dataclass(frozen=True)
class Answer(TextTask):
    question: str
    lang: str = "en"
    name: ClassVar[str] = "answer"

    def __post_init__(self) -> None:
        check_word(self.lang, "language code")
        check_line(self.question, "question")

    def prompt(self) -> str:
        return f"answer {self.lang} {self.question.strip()}"
