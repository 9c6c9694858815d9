"""`segment cat ; dog`: boxes plus masks, decoded through the VQ-VAE when a MaskDecoder is given (boxes only, with
the seg codes kept on the objects, without one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tasks.detect import Detect


@dataclass(frozen=True)
class Segment(Detect):
    name: ClassVar[str] = "segment"
    decodes_masks: ClassVar[bool] = True
