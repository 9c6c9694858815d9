"""`describe {lang}`: a longer description than a caption; same result type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.caption import Caption


@dataclass(frozen=True)
class Describe(Caption):
    name: ClassVar[str] = "describe"
