"""Our network against transformers on the same files: logits, batched greedy text, cache, dtypes, sampling."""

from __future__ import annotations

import pytest
import torch

from model import PaliGemma

PROMPTS = ["caption en", "detect cat ; dog", "answer en what color is the car on the left", "ocr"]
FAMILIES = {"pg1": "tiny", "pg2": "tiny2"}  # tiny2: Gemma 2, grouped-query, soft-capping, sliding window 8


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["transformers", "hub", "in-memory"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_logits_match_transformers(checkpoint, photos, family, layout, sharded):
    folder, hf = checkpoint(FAMILIES[family], layout, sharded)
    if sharded:
        assert (folder / "model.safetensors.index.json").is_file()
    model = PaliGemma.from_pretrained(folder)
    ids, valid = model.tokenizer.batch(["detect cat ; dog"] * 2, model.config.num_image_tokens)
    assert valid.all()
    pixels = model.image_processor(photos[:2])
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels)
        ref = hf(input_ids=ids, pixel_values=pixels, token_type_ids=torch.zeros_like(ids)).logits
    assert ours.shape == ref.shape == (2, ids.shape[1], model.config.text.vocab_size)
    assert relative_error(ours, ref) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_and_suffix_logits_match_transformers(checkpoint, photos, family):
    """token_type_ids = 1 marks a causal suffix after the bidirectional prefix (the training layout)."""
    folder, hf = checkpoint(FAMILIES[family])
    model = PaliGemma.from_pretrained(folder)
    prompt = model.tokenizer.encode_prompt("caption en", model.config.num_image_tokens)
    suffix = model.tokenizer.tok.encode("a cat on the left", add_special_tokens=False).ids
    ids = torch.tensor([prompt + suffix])
    types = torch.tensor([[0] * len(prompt) + [1] * len(suffix)])
    pixels = model.image_processor(photos[1:2])
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels, token_type_ids=types)
        ref = hf(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits
        all_prefix = model(input_ids=ids, pixel_values=pixels)
    assert relative_error(ours, ref) < 1e-4
    # the suffix mask matters: treating the suffix as prefix changes the prefix's last logits
    assert relative_error(all_prefix[:, len(prompt) - 1], ours[:, len(prompt) - 1]) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_changes_nothing(checkpoint, photos, family):
    folder, _ = checkpoint(FAMILIES[family])
    model = PaliGemma.from_pretrained(folder)
    ids, valid = model.tokenizer.batch(["ocr", PROMPTS[2]], model.config.num_image_tokens)
    pad = int((~valid[0]).sum())
    assert pad > 0
    pixels = model.image_processor(photos[:2])
    with torch.no_grad():
        padded = model(input_ids=ids, pixel_values=pixels, attention_mask=valid)
        alone = model(input_ids=ids[:1, pad:], pixel_values=pixels[:1])
    assert relative_error(padded[0, pad:], alone[0]) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_text_equals_transformers_one_prompt_at_a_time(checkpoint, photos, family):
    folder, hf = checkpoint(FAMILIES[family])
    model = PaliGemma.from_pretrained(folder)
    lengths = {len(model.tokenizer.encode_prompt(p, model.config.num_image_tokens)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "prompts must differ in length"
    if family == "pg2":
        assert min(lengths) > model.config.text.sliding_window, "the sliding window must be shorter than the prompt"
    ours = model.generate(photos, PROMPTS, max_new_tokens=12, return_logprobs=True)
    for image, prompt, gen in zip(photos, PROMPTS, ours, strict=True):
        ids = torch.tensor([model.tokenizer.encode_prompt(prompt, model.config.num_image_tokens)])
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                token_type_ids=torch.zeros_like(ids),
                pixel_values=model.image_processor([image]),
                max_new_tokens=12,
                do_sample=False,
            )
        ref = out[0, ids.shape[1] :].tolist()
        ref = ref[: ref.index(model.tokenizer.eos_id)] if model.tokenizer.eos_id in ref else ref
        assert gen.token_ids == ref
        assert gen.text == model.tokenizer.decode(ref)
    assert len({g.text for g in ours}) > 1, "random weights should give different answers to different inputs"


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_a_full_forward_pass(checkpoint, photos, family):
    """Log-probabilities from the KV-cached loop equal those of one forward pass over prompt + answer."""
    folder, _ = checkpoint(FAMILIES[family])
    model = PaliGemma.from_pretrained(folder)
    (gen,) = model.generate(photos[:1], ["caption en"], max_new_tokens=10, return_logprobs=True, stop_at_eos=False)
    prompt = model.tokenizer.encode_prompt("caption en", model.config.num_image_tokens)
    ids = torch.tensor([prompt + gen.token_ids])
    types = torch.tensor([[0] * len(prompt) + [1] * len(gen.token_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=model.image_processor(photos[:1]), token_type_ids=types)
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float(), -1)
    expected = logprobs.gather(1, torch.tensor(gen.token_ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(gen.logprobs), expected, rtol=1e-4, atol=1e-4)
    assert len(gen.tokens) == len(gen.token_ids) and "".join(gen.tokens) == gen.text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_without_nan(checkpoint, photos, family, dtype):
    folder, _ = checkpoint(FAMILIES[family])
    model = PaliGemma.from_pretrained(folder, dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    ids, _ = model.tokenizer.batch(["caption en"], model.config.num_image_tokens)
    with torch.no_grad():
        low = model(input_ids=ids, pixel_values=model.image_processor(photos[:1]))
        full = PaliGemma.from_pretrained(folder)(input_ids=ids, pixel_values=model.image_processor(photos[:1]))
    assert low.dtype == dtype and torch.isfinite(low).all()
    assert torch.corrcoef(torch.stack([low.float().flatten(), full.flatten()]))[0, 1] > 0.99
    gens = model.generate(photos[:2], ["caption en", "ocr"], max_new_tokens=6, return_logprobs=True)
    assert all(len(g.token_ids) > 0 and all(lp <= 0 for lp in g.logprobs) for g in gens)


def test_seeded_sampling_is_reproducible(checkpoint, photos):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    sample = lambda seed, **kw: model.generate(  # noqa: E731
        photos, PROMPTS, max_new_tokens=12, do_sample=True, temperature=1.5, seed=seed, **kw
    )
    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    # a nucleus so small that only the top token survives is greedy decoding
    greedy = model.generate(photos, PROMPTS, max_new_tokens=12)
    assert sample(7, top_p=1e-6) == greedy


def test_each_row_stops_at_its_own_eos(checkpoint, photos):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    free = model.generate(photos[:2], ["caption en", "ocr"], max_new_tokens=10, return_logprobs=True)
    # Pretend a token of the first row is <eos>: its first occurrence, one the second row never produces.
    first, second = free[0].token_ids, free[1].token_ids
    cut = next(i for i, t in enumerate(first) if t not in second and t not in first[:i])
    model.tokenizer.eos_id = first[cut]
    stopped = model.generate(photos[:2], ["caption en", "ocr"], max_new_tokens=10, return_logprobs=True)
    assert stopped[0].token_ids == first[:cut] and stopped[0].stopped_at_eos
    assert stopped[0].text == model.tokenizer.decode(first[:cut])
    assert stopped[1].token_ids == free[1].token_ids and not stopped[1].stopped_at_eos


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"prompts": ["a", "b"]}, "one prompt per image"),
    ],
)
def test_generate_rejects_bad_options(checkpoint, photos, kwargs, message):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    args = {"images": photos[:1], "prompts": ["caption en"]} | kwargs
    with pytest.raises(ValueError, match=message):
        model.generate(**args)


def test_other_resolutions_load_and_match(tmp_path, photos):
    """A 448/896-px checkpoint differs only in image_size (more patches, more position embeddings)."""
    from model.config import VisionConfig
    from model.sizes import SIZES
    from testing.checkpoints import write_random_checkpoint

    config = SIZES["tiny"].replace(vision=VisionConfig(hidden_size=32, intermediate_size=64, num_layers=2,
                                                       num_heads=4, image_size=112))  # fmt: skip
    hf = write_random_checkpoint(tmp_path, config)
    model = PaliGemma.from_pretrained(tmp_path)
    assert model.config.num_image_tokens == 64 and model.image_processor.size == 112
    ids, _ = model.tokenizer.batch(["caption en"], 64)
    pixels = model.image_processor(photos[:1])
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=pixels, token_type_ids=torch.zeros_like(ids)).logits
        ours = model(input_ids=ids, pixel_values=pixels)
    assert relative_error(ours, ref) < 1e-4


def test_forward_with_gradients_equals_inference(checkpoint, photos):
    """Training keeps activations out of place; inference overwrites them in place. Both compute the same."""
    model = PaliGemma.from_pretrained(checkpoint("tiny2")[0])
    ids, _ = model.tokenizer.batch(["caption en"], model.config.num_image_tokens)
    pixels = model.image_processor(photos[:1])
    with_grad = model(input_ids=ids, pixel_values=pixels)
    with_grad.float().logsumexp(-1).mean().backward()
    assert model.language_model.layers[0].mlp.gate_proj.weight.grad is not None
    with torch.inference_mode():
        inference = model(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(with_grad.detach(), inference)
