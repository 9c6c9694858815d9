"""`ocr`: the text in the image. The prompt has no language option; inner whitespace of the result is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.base import TextTask


@dataclass(frozen=True)
class Ocr(TextTask):
    name: ClassVar[str] = "ocr"

    def prompt(self) -> str:
        return "ocr"
