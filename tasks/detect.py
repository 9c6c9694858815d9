"""`detect cat ; dog`: boxes for the listed classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import ObjectsResult, check_classes, parse_objects_result


@dataclass(frozen=True)
class Detect:
    """classes: the names to look for (a list or tuple; see `tasks.parse_classes` for the "cat ; dog" form)."""

    classes: tuple[str, ...]
    name: ClassVar[str] = "detect"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", check_classes(self.classes))

    def prompt(self) -> str:
        return f"{self.name} " + " ; ".join(self.classes)

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
        """Boxes only: seg tokens, should a checkpoint write them, are kept on the objects but not decoded."""
        return parse_objects_result(
            text, width=width, height=height, tokens=tokens, logprobs=logprobs, mask_decoder=None, classes=self.classes
        )
