"""What training a small model from scratch needs beyond its size (model/sizes.py): the tokenizer of its small
vocabulary, an untrained model with its tokenizer and image processor attached, and the named curricula of
`jobs.finetune --curriculum NAME`.
"""

from __future__ import annotations

from model.config import PaliGemmaConfig
from model.image_processing import ImageProcessor
from model.paligemma import PaliGemma
from model.sizes import SIZES, SMALL_SIZES
from model.tokenizer import PromptTokenizer

from .vocab import WORDS, build_tokenizer

# Whole-word tokens for the shapes prompts and answers; OCR words (A-Z, 2-9) stay single characters.
SHAPES_WORDS = (
    "circle", "square", "triangle", "circles", "squares", "triangles",
    "red", "green", "blue", "yellow", "purple", "orange", "how", "many", "are", "there", ";",
)  # fmt: skip

# Named curricula for `jobs.finetune --curriculum NAME`: lists of training.shapes.Stage fields. The probes that
# chose them are in checkpoints/paligemma-shapes/README.md. "shapes": lone objects and short words first (a
# decoder learns where to look on one object, and to read on a few letters), then two objects, then the spec;
# OCR gets a smaller share than the spec's mix because it learns slowest of all (a 32 px patch holds 1-3
# letters) and the other four skills share the same examples.
_SHAPES_MIX = {"detect": 0.3, "segment": 0.2, "caption": 0.2, "count": 0.15, "ocr": 0.15}
# "shapes-448": the second bundled model, raised to 448 px (196 image tokens at 32 px patches) from the first: the
# probes showed reading starts only at that resolution, and that it is the slowest skill, so OCR has the largest
# share, short words first; the other skills are kept up while the tower adapts to the finer grid; every stage
# draws with augmentation (training/shapes.py) so that detection transfers to other drawings of the spec.
_READING_MIX = {"detect": 0.17, "segment": 0.13, "caption": 0.08, "count": 0.07, "ocr": 0.55}
_FINAL_MIX = {"detect": 0.25, "segment": 0.15, "caption": 0.1, "count": 0.1, "ocr": 0.4}
CURRICULA: dict[str, list[dict]] = {
    "shapes": [
        {"examples": 16000, "max_objects": 1, "word_lengths": [1, 3], "mix": _SHAPES_MIX},
        {"examples": 32000, "max_objects": 2, "word_lengths": [2, 6], "mix": _SHAPES_MIX},
        {"examples": 1, "mix": _SHAPES_MIX},
    ],
    "shapes-448": [
        {"examples": 8000, "word_lengths": [1, 4], "mix": _READING_MIX, "augment": True},
        {"examples": 24000, "word_lengths": [2, 6], "mix": _READING_MIX, "augment": True},
        {"examples": 1, "mix": _FINAL_MIX, "augment": True},
    ],
}


def small_config(name: str) -> PaliGemmaConfig:
    """A named size that trains with the small vocabulary (model/sizes.py); ValueError for another name."""
    if name not in SMALL_SIZES:
        raise ValueError(f"unknown size {name!r}; known: {', '.join(SMALL_SIZES)}")
    return SIZES[name]


def tokenizer_for(name: str) -> PromptTokenizer:
    """The tokenizer a named small size is trained with (the shapes sizes know their prompts' words)."""
    config = small_config(name)
    words = (*WORDS, *SHAPES_WORDS) if name.startswith("shapes") else WORDS
    return PromptTokenizer(build_tokenizer(config.image_token_id - 1152, words))


def scratch_model(name: str) -> PaliGemma:
    """An uninitialized (torch-default) model of a named size, with its tokenizer and image processor attached."""
    config = small_config(name)
    return PaliGemma(config, tokenizer_for(name), ImageProcessor(size=config.vision.image_size))
