"""Pure decoding of PaliGemma output: `<loc>` tokens to boxes, `<seg>` tokens to masks, log-probs to scores.

Imports nothing else of ours, so tasks, pipelines and evals can all use it. The mask modules (torch) are imported
when first asked for: reading boxes and text needs no torch, and a job's driver starts faster without it.
"""

from decoders.loc_tokens import (
    DetectedObject,
    ParseReport,
    coord_to_loc,
    encode_objects,
    format_object,
    loc_to_coord,
    parse_objects,
    parse_objects_with_report,
    strip_end_tokens,
)
from decoders.scores import span_score, token_offsets, tokens_in_span

_LAZY = {
    **dict.fromkeys(("crop_to_box", "mask_to_rle", "paste_mask", "paste_masks", "rle_to_mask"), "decoders.masks"),
    **dict.fromkeys(("MaskDecoder", "MaskEncoder"), "decoders.vqvae"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'decoders' has no attribute {name!r}")


__all__ = [
    "DetectedObject",
    "MaskDecoder",
    "MaskEncoder",
    "ParseReport",
    "coord_to_loc",
    "crop_to_box",
    "encode_objects",
    "format_object",
    "loc_to_coord",
    "mask_to_rle",
    "parse_objects",
    "parse_objects_with_report",
    "paste_mask",
    "paste_masks",
    "rle_to_mask",
    "span_score",
    "strip_end_tokens",
    "token_offsets",
    "tokens_in_span",
]
