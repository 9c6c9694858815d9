"""`segment cat ; dog`: boxes plus masks, decoded through the VQ-VAE when a MaskDecoder is given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from decoders import MaskDecoder
from tasks.base import ObjectsResult, parse_objects_result
from tasks.detect import Detect


@dataclass(frozen=True)
class Segment(Detect):
    name: ClassVar[str] = "segment"

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
        """Without a MaskDecoder the result has boxes only (every mask None); the seg codes stay on the objects."""
        return parse_objects_result(
            text,
            width=width,
            height=height,
            tokens=tokens,
            logprobs=logprobs,
            mask_decoder=mask_decoder,
            classes=self.classes,
        )
