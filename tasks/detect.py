"""`detect cat ; dog`: boxes for the listed classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.base import ObjectsTask, check_classes


@dataclass(frozen=True)
class Detect(ObjectsTask):
    """classes: the names to look for (a list or tuple; see `tasks.parse_classes` for the "cat ; dog" form).

    Boxes only: seg codes, should a checkpoint write them, are kept on the objects but not decoded.
    """

    classes: tuple[str, ...]
    name: ClassVar[str] = "detect"
    decodes_masks: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", check_classes(self.classes))

    def prompt(self) -> str:
        return f"{self.name} " + " ; ".join(self.classes)
