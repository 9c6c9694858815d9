"""The one table of named model sizes: the released PaliGemma 1 and 2 sizes, and the small ones with this
project's own small vocabulary (tests, benchmarks, the bundled shapes model).

`PaliGemmaConfig.from_name(name)` reads it; `jobs.finetune --scratch NAME`, `jobs.bench --size NAME` and the test
checkpoints (testing/checkpoints.py) all name sizes from here.
"""

from __future__ import annotations

from .config import PaliGemmaConfig, TextConfig, VisionConfig, gemma2_layer_types

# The small vocabulary of training/vocab.py: 768 text ids, then 1024 <loc>, 128 <seg>, <image>. (The released
# checkpoints use the real layout: <loc0000> = 256000, <image> = 257152, vocabulary 257216.)
SMALL_VOCAB, SMALL_IMAGE_ID = 1984, 1920


# Small random-weight sizes for tests and benchmarks: tiny (PaliGemma 1 layout), tiny2 (Gemma 2: soft-capping,
# GQA, a sliding window of 8 shorter than any prompt), and mid (about 64M parameters with PaliGemma's proportions,
# 224 px / patch 14 = 256 image tokens, multi-query text), the CPU benchmark's size.
_SMALL: dict[str, PaliGemmaConfig] = {
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


# The released sizes (PaliGemma 1 and 2, 224 px; other resolutions change only vision.image_size). Small models
# with their own vocabulary (tests, benchmarks, the bundled shapes model) are named in training/recipes.py.
_SIGLIP_SO400M = VisionConfig()
_RELEASED: dict[str, PaliGemmaConfig] = {
    "pg1-3b": PaliGemmaConfig(vision=_SIGLIP_SO400M, text=TextConfig(), projection_dim=2048),
    "pg2-3b": PaliGemmaConfig(
        vision=_SIGLIP_SO400M,
        text=TextConfig(
            family="gemma2",
            hidden_size=2304,
            intermediate_size=9216,
            num_layers=26,
            num_heads=8,
            num_kv_heads=4,
            head_dim=256,
            query_pre_attn_scalar=256,
            attn_logit_softcap=50.0,
            final_logit_softcap=30.0,
            sliding_window=4096,
            layer_types=gemma2_layer_types(26),
        ),
        projection_dim=2304,
    ),
}

SIZES: dict[str, PaliGemmaConfig] = {**_RELEASED, **_SMALL}
# The sizes that use the small vocabulary (their tokenizer comes from training.recipes.tokenizer_for).
SMALL_SIZES: tuple[str, ...] = tuple(_SMALL)
