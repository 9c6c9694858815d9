"""`caption {lang}`: a short caption in the given language."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.base import TextTask, check_word


@dataclass(frozen=True)
class Caption(TextTask):
    lang: str = "en"
    name: ClassVar[str] = "caption"

    def __post_init__(self) -> None:
        check_word(self.lang, "language code")

    def prompt(self) -> str:
        return f"{self.name} {self.lang}"
