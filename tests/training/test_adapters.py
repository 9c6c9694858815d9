"""LoRA adapters in peft's format: one trained here loads in transformers + peft with our logits, the merged
checkpoint gives them again, and one made by transformers + peft loads here."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from jobs.merge_adapter import main as merge_adapter
from model import PaliGemma
from model.adapters import AdapterError, apply_adapter, load_with_adapter, read_adapter
from training.data import collate
from training.loop import FinetuneConfig, train

from .test_finetune import _dataset


def _batch(model):
    records = [type("R", (), {"image": Image.new("RGB", (40, 30), c), "prefix": "caption en", "suffix": f"a {c}",
                              "task": ""})() for c in ("red", "blue")]  # fmt: skip
    return collate(records, model.tokenizer, model.image_processor, model.config.num_image_tokens)


def _hf_logits(model, batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, pixel_values=batch.pixel_values, attention_mask=batch.attention_mask.long(),
                 token_type_ids=batch.token_type_ids).logits  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def trained(checkpoint, tmp_path_factory):
    """A LoRA run of a few steps at a high rate, so that the adapter is far from zero."""
    folder = checkpoint("tiny")[0]
    tmp = tmp_path_factory.mktemp("lora")
    cfg = FinetuneConfig(output=str(tmp / "run"), train=str(_dataset(tmp / "data")), model=str(folder), mode="lora",
                         lora_rank=4, steps=6, batch_size=4, lr=2e-2, warmup=1, log_every=3, threads=1)  # fmt: skip
    train(cfg, log=lambda _: None)
    return folder, tmp / "run" / "final"


def test_the_adapter_is_peft_format_with_hugging_face_names(trained):
    _, adapter = trained
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    keys = load_file(str(adapter / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.model.language_model.layers.") for k in keys)
    assert any(k.endswith("self_attn.q_proj.lora_A.weight") for k in keys)
    assert max(v.abs().max() for k, v in keys.items() if ".lora_B." in k) > 1e-3  # it was trained


def test_transformers_and_peft_load_it_with_our_logits(trained):
    from peft import PeftModel
    from transformers import PaliGemmaForConditionalGeneration

    folder, adapter = trained
    ours = load_with_adapter(folder, adapter)
    unmerged = apply_adapter(PaliGemma.from_pretrained(folder), adapter, merge=False)
    base = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    theirs = PeftModel.from_pretrained(base, str(adapter)).eval()
    plain = PaliGemma.from_pretrained(folder)
    batch = _batch(ours)
    args = (batch.input_ids, batch.pixel_values, batch.attention_mask, batch.token_type_ids)
    with torch.no_grad():
        want = _hf_logits(theirs, batch)
        merged, adapted, original = ours(*args), unmerged(*args), plain(*args)
    valid = batch.attention_mask
    assert _rel(adapted[valid], want[valid]) < 1e-5
    assert _rel(merged[valid], want[valid]) < 1e-5
    assert _rel(original[valid], want[valid]) > 1e-3  # the adapter changes the function


def test_merge_adapter_writes_a_checkpoint_with_the_same_logits(trained, tmp_path, capsys):
    folder, adapter = trained
    out = tmp_path / "merged"
    assert merge_adapter(["--base", str(folder), "--adapter", str(adapter), "--output", str(out)]) == 0
    merged = PaliGemma.from_pretrained(out)
    ours = load_with_adapter(folder, adapter)
    batch = _batch(ours)
    args = (batch.input_ids, batch.pixel_values, batch.attention_mask, batch.token_type_ids)
    with torch.no_grad():
        assert _rel(merged(*args)[batch.attention_mask], ours(*args)[batch.attention_mask]) < 1e-5
    assert merge_adapter(["--base", str(folder), "--adapter", str(adapter), "--output", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert merge_adapter(["--base", str(folder), "--adapter", str(folder), "--output", str(tmp_path / "x")]) == 2
    assert "not a peft adapter folder" in capsys.readouterr().err


def test_an_adapter_made_by_transformers_and_peft_loads_here(checkpoint, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    folder = checkpoint("tiny")[0]
    base = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    # Leaf names, as the fine-tuning guides write them: they select the vision tower's projections too.
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "fc1"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(tmp_path / "hf-adapter")
    ours = load_with_adapter(folder, tmp_path / "hf-adapter")
    batch = _batch(ours)
    with torch.no_grad():
        want = _hf_logits(peft_model, batch)
        got = ours(batch.input_ids, batch.pixel_values, batch.attention_mask, batch.token_type_ids)
    assert _rel(got[batch.attention_mask], want[batch.attention_mask]) < 1e-5
    _, state = read_adapter(tmp_path / "hf-adapter")
    assert any(k.startswith("vision_tower.") for k in state) and any(k.startswith("language_model.") for k in state)


def test_an_adapter_for_another_model_is_refused_by_name(checkpoint, tmp_path):
    from safetensors.torch import save_file

    folder = checkpoint("tiny")[0]
    other = tmp_path / "bad"
    other.mkdir()
    (other / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                           "target_modules": ["q_proj"]}))  # fmt: skip
    save_file({"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 999),
               "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)},
              str(other / "adapter_model.safetensors"))  # fmt: skip
    with pytest.raises(AdapterError, match="lora_A.weight"):
        load_with_adapter(folder, other)


def test_an_adapter_loads_into_a_bfloat16_model_merged_in_float32(trained):
    folder, adapter = trained
    exact = load_with_adapter(folder, adapter)
    half = load_with_adapter(folder, adapter, dtype="bf16")
    assert half.dtype == torch.bfloat16
    batch = _batch(exact)
    args = (batch.input_ids, batch.pixel_values, batch.attention_mask, batch.token_type_ids)
    with torch.no_grad():
        want, got = exact(*args)[batch.attention_mask], half(*args)[batch.attention_mask].float()
    assert _rel(got, want) < 0.05  # bfloat16's rounding, not a lost adapter
    texts = half.generate([Image.new("RGB", (40, 30), "red")], ["caption en"], max_new_tokens=4)
    assert isinstance(texts[0], str)
