"""Named from-scratch model sizes for `jobs.finetune --scratch NAME`, with the tokenizer and preprocessing each needs.

"shapes" is the bundled demo model: PaliGemma's architecture (SigLIP tower, linear projector, multi-query Gemma
decoder, PaliGemma's vocabulary layout) shrunk so that it trains on a 2-core CPU in about an hour. 224 px images
in 32 px patches give 49 image tokens, which is what makes that possible (DESIGN.md §12).
"""

from __future__ import annotations

from model.config import SIZES, SMALL_IMAGE_ID, SMALL_VOCAB, PaliGemmaConfig, TextConfig, VisionConfig
from model.image_processing import ImageProcessor
from model.paligemma import PaliGemma
from model.random_checkpoint import WORDS, build_tokenizer
from model.tokenizer import PromptTokenizer

# Whole-word tokens for the shapes prompts and answers; OCR words (A-Z, 2-9) stay single characters.
SHAPES_WORDS = (
    "circle", "square", "triangle", "circles", "squares", "triangles",
    "red", "green", "blue", "yellow", "purple", "orange", "how", "many", "are", "there", ";",
)  # fmt: skip

RECIPES: dict[str, PaliGemmaConfig] = {
    "shapes": PaliGemmaConfig(
        vision=VisionConfig(
            hidden_size=192, intermediate_size=768, num_layers=4, num_heads=3, image_size=224, patch_size=32
        ),
        text=TextConfig(
            vocab_size=SMALL_VOCAB,
            hidden_size=256,
            intermediate_size=1024,
            num_layers=6,
            num_heads=4,
            num_kv_heads=1,
            head_dim=64,
        ),
        projection_dim=256,
        image_token_id=SMALL_IMAGE_ID,
    ),
}


def scratch_model(name: str) -> PaliGemma:
    """An uninitialized (torch-default) model of a named size, with its tokenizer and image processor attached."""
    if name in RECIPES:
        config, words = RECIPES[name], (*WORDS, *SHAPES_WORDS)
    elif name in SIZES and SIZES[name].image_token_id == SMALL_IMAGE_ID:
        config, words = SIZES[name], WORDS
    else:
        known = [*RECIPES, *(k for k, v in SIZES.items() if v.image_token_id == SMALL_IMAGE_ID)]
        raise ValueError(f"unknown scratch size {name!r}; known: {', '.join(known)}")
    tokenizer = PromptTokenizer(build_tokenizer(config.image_token_id - 1152, words))
    return PaliGemma(config, tokenizer, ImageProcessor(size=config.vision.image_size))
