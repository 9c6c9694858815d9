"""Batched generation: one prefill over left-padded prompts, then one-token causal steps on a static cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from PIL import Image

    from .paligemma import PaliGemma


@dataclass
class Generation:
    """One answer with its tokens. `"".join(tokens) == text`; logprobs are natural-log probabilities of each
    token under the model's own distribution (before temperature and top-p), the raw material of scores."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    stopped_at_eos: bool


def sample_next(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids [B] from float32 logits [B, V]: greedy, or temperature + nucleus (top-p) sampling."""
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest head of the distribution whose mass reaches top_p (the top token always stays).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_options(max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.inference_mode()
def generate(
    model: PaliGemma,
    images: list[Image.Image],
    prompts: list[str] | str,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    return_logprobs: bool = False,
    stop_at_eos: bool = True,
) -> list[str] | list[Generation]:
    """Answer each (image, prompt) pair; prompts may differ in length. A single prompt string serves every image.

    Each row stops at its first <eos> (which is not part of the text); <loc>/<seg> tokens stay in the text.
    With `return_logprobs`, each answer comes as a `Generation` with its tokens and their log-probabilities.
    `stop_at_eos=False` always runs `max_new_tokens` steps (benchmarks use it to time a fixed amount of work).
    """
    if model.tokenizer is None or model.image_processor is None:
        raise ValueError("generate needs the tokenizer and image processor that from_pretrained attaches")
    if isinstance(prompts, str):
        prompts = [prompts] * len(images)
    if len(prompts) != len(images):
        raise ValueError(f"expected one prompt per image but got {len(prompts)} prompts for {len(images)} images")
    check_options(max_new_tokens, do_sample, temperature, top_p)
    if not images:
        return []
    tok, device = model.tokenizer, model.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    pixel_values = model.image_processor(images).to(device, model.dtype)
    input_ids, prompt_valid = tok.batch(prompts, model.config.num_image_tokens)
    input_ids, prompt_valid = input_ids.to(device), prompt_valid.to(device)
    B, T = input_ids.shape
    cache = model.new_cache(B, T + max_new_tokens)
    valid = torch.ones(B, T + max_new_tokens, dtype=torch.bool, device=device)
    valid[:, :T] = prompt_valid
    positions = prompt_valid.sum(1)  # RoPE position of each row's last prompt token (1-based, real tokens only)

    logits = model.prefill(input_ids, pixel_values, prompt_valid, cache)
    out_ids, out_logprobs = [], []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        logits = logits.float()
        nxt = sample_next(logits, do_sample, temperature, top_p, generator)
        out_ids.append(nxt)
        if return_logprobs:
            out_logprobs.append(torch.log_softmax(logits, -1).gather(1, nxt[:, None])[:, 0])
        if stop_at_eos:
            done |= nxt == tok.eos_id
            if bool(done.all()):
                break
        if step == max_new_tokens - 1:
            break
        positions = positions + 1
        slot = T + step
        logits = model.decode_step(nxt, positions, slot, valid[:, : slot + 1], cache)

    ids = torch.stack(out_ids, 1).tolist()
    lps = torch.stack(out_logprobs, 1).tolist() if return_logprobs else None
    results: list = []
    for i, row in enumerate(ids):
        stopped = stop_at_eos and tok.eos_id in row
        n = row.index(tok.eos_id) if stopped else len(row)
        text = tok.decode(row[:n])
        if not return_logprobs:
            results.append(text)
            continue
        results.append(Generation(text, row[:n], tok.pieces(row[:n]), lps[i][:n], stopped))
    return results
