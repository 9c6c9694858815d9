import pytest

from model import PaliGemmaConfig, TextConfig
from model.config import ModelConfigError
from model.sizes import SIZES


@pytest.mark.parametrize("config", SIZES.values(), ids=SIZES)
def test_named_sizes_survive_the_config_json_round_trip(config):
    assert PaliGemmaConfig.from_hf_dict(config.to_hf_dict()) == config


def test_transformers_reads_our_config_json_the_same_way():
    from transformers import PaliGemmaConfig as HFConfig

    hf = HFConfig.from_dict(SIZES["pg2-3b"].to_hf_dict())
    assert hf.text_config.num_key_value_heads == 4 and hf.text_config.query_pre_attn_scalar == 256
    assert hf.text_config.layer_types[:2] == ["sliding_attention", "full_attention"]
    assert hf.text_config.num_image_tokens == 256


def test_mid_is_about_sixty_million_parameters():
    import torch

    from model import PaliGemma

    with torch.device("meta"):
        n = sum(p.numel() for p in PaliGemma(SIZES["mid"]).parameters())
    assert 55e6 < n < 70e6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"family": "llama"}, "family"),
        ({"num_heads": 8, "num_kv_heads": 3}, "multiple"),
        ({"num_layers": 2, "layer_types": ("full",)}, "layer_types"),
        ({"num_layers": 1, "layer_types": ("sliding",)}, "sliding_window"),
    ],
)
def test_inconsistent_text_configs_are_refused(kwargs, message):
    with pytest.raises(ModelConfigError, match=message):
        TextConfig(**kwargs)


def test_unknown_size_lists_the_known_ones():
    with pytest.raises(KeyError, match="pg1-3b"):
        PaliGemmaConfig.from_name("huge")
