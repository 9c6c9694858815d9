"""Named from-scratch model sizes for `jobs.finetune --scratch NAME`, with the tokenizer and preprocessing each needs.

"shapes" is the bundled demo model: PaliGemma's architecture (SigLIP tower, linear projector, multi-query Gemma
decoder, PaliGemma's vocabulary layout) shrunk so that it trains on a 2-core CPU in hours. 224 px images in 32 px
patches give 49 image tokens; a training step costs about as much per token in the text decoder as in the tower,
so the number of image tokens sets the pace (196 tokens, 16 px patches, train about 4 times slower per example).
"""

from __future__ import annotations

from model.config import PaliGemmaConfig, TextConfig, VisionConfig, gemma2_layer_types
from model.image_processing import ImageProcessor
from model.paligemma import PaliGemma
from model.tokenizer import PromptTokenizer

from .vocab import WORDS, build_tokenizer

# The small vocabulary of training/vocab.py: 768 text ids, then 1024 <loc>, 128 <seg>, <image>. (The released
# checkpoints use the real layout: <loc0000> = 256000, <image> = 257152, vocabulary 257216.)
SMALL_VOCAB, SMALL_IMAGE_ID = 1984, 1920


# Whole-word tokens for the shapes prompts and answers; OCR words (A-Z, 2-9) stay single characters.
SHAPES_WORDS = (
    "circle", "square", "triangle", "circles", "squares", "triangles",
    "red", "green", "blue", "yellow", "purple", "orange", "how", "many", "are", "there", ";",
)  # fmt: skip

# Small random-weight sizes for tests and benchmarks: tiny (PaliGemma 1 layout), tiny2 (Gemma 2: soft-capping,
# GQA, a sliding window of 8 shorter than any prompt), and mid (about 64M parameters with PaliGemma's proportions,
# 224 px / patch 14 = 256 image tokens, multi-query text), the CPU benchmark's size.
SMALL_SIZES: dict[str, PaliGemmaConfig] = {
    "tiny": PaliGemmaConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, image_size=56),
        text=TextConfig(
            vocab_size=SMALL_VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=1,
            head_dim=16,
        ),
        projection_dim=64,
        image_token_id=SMALL_IMAGE_ID,
    ),
    "tiny2": PaliGemmaConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, image_size=56),
        text=TextConfig(
            family="gemma2",
            vocab_size=SMALL_VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            attn_logit_softcap=50.0,
            final_logit_softcap=30.0,
            sliding_window=8,
            layer_types=gemma2_layer_types(4),
        ),
        projection_dim=64,
        image_token_id=SMALL_IMAGE_ID,
    ),
    "mid": PaliGemmaConfig(
        vision=VisionConfig(hidden_size=384, intermediate_size=1536, num_layers=6, num_heads=6, image_size=224),
        text=TextConfig(
            vocab_size=SMALL_VOCAB,
            hidden_size=512,
            intermediate_size=4096,
            num_layers=8,
            num_heads=8,
            num_kv_heads=1,
            head_dim=64,
        ),
        projection_dim=512,
        image_token_id=SMALL_IMAGE_ID,
    ),
    # The bundled demo model (checkpoints/paligemma-shapes).
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


# Named curricula for `jobs.finetune --curriculum NAME`: lists of training.shapes.Stage fields. The probes that
# chose them are in checkpoints/paligemma-shapes/README.md. "shapes": lone objects and short words first (a
# decoder learns where to look on one object, and to read on a few letters), then two objects, then the spec;
# OCR gets a smaller share than the spec's mix because it learns slowest of all (a 32 px patch holds 1-3
# letters) and the other four skills share the same examples.
_SHAPES_MIX = {"detect": 0.3, "segment": 0.2, "caption": 0.2, "count": 0.15, "ocr": 0.15}
CURRICULA: dict[str, list[dict]] = {
    "shapes": [
        {"examples": 16000, "max_objects": 1, "word_lengths": [1, 3], "mix": _SHAPES_MIX},
        {"examples": 32000, "max_objects": 2, "word_lengths": [2, 6], "mix": _SHAPES_MIX},
        {"examples": 1, "mix": _SHAPES_MIX},
    ],
}


def small_config(name: str) -> PaliGemmaConfig:
    if name not in SMALL_SIZES:
        raise ValueError(f"unknown size {name!r}; known: {', '.join(SMALL_SIZES)}")
    return SMALL_SIZES[name]


def tokenizer_for(name: str) -> PromptTokenizer:
    """The tokenizer a named small size is trained with (the shapes sizes know their prompts' words)."""
    config = small_config(name)
    words = (*WORDS, *SHAPES_WORDS) if name.startswith("shapes") else WORDS
    return PromptTokenizer(build_tokenizer(config.image_token_id - 1152, words))


def scratch_model(name: str) -> PaliGemma:
    """An uninitialized (torch-default) model of a named size, with its tokenizer and image processor attached."""
    config = small_config(name)
    return PaliGemma(config, tokenizer_for(name), ImageProcessor(size=config.vision.image_size))
