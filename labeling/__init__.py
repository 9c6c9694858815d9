"""The labeling core: images in, output rows out, with no Ray in sight.

    images.py    the one image decoder of every entry point (job, single-image command, web page, previews)
    answers.py   label_batch: generate, then read each answer into a row (rows.Row) and a typed result
    backends.py  the models a replica can run behind one `generate`: ours and transformers'
    filters.py   which objects of a row to keep (score thresholds, NMS)
    errors.py    the kinds of error a row can carry, and which ones a retry can fix

The label job's replicas (pipelines/), `python -m model`, the web page (ui/) and evaluation while training all
call this package, so a row means the same thing wherever it was made.
"""

from labeling.filters import ObjectFilter, parse_class_thresholds
from labeling.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image, open_image, prepare, to_rgb

# The model side (torch) is imported when first asked for, so that a driver which only plans inputs, decodes or
# filters (the label job's) does not pay for torch at start-up.
_LAZY = {"Labeled": "labeling.answers", "label_batch": "labeling.answers", "BACKENDS": "labeling.backends",
         "Backend": "labeling.backends"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labeling' has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_PIXELS",
    "Backend",
    "ImageDecodeError",
    "Labeled",
    "ObjectFilter",
    "decode_image",
    "label_batch",
    "open_image",
    "parse_class_thresholds",
    "prepare",
    "to_rgb",
]
