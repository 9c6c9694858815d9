"""The batch engine: continuous batching gives every pair the answer it gets alone, the compiled step gives the
eager step's tokens, and an image shared by several prompts goes through the vision tower once."""

from __future__ import annotations

import pytest
import torch

from model import PaliGemma
from model.layouts import candidate_layouts
from model.runner import Runner

PROMPTS = ["caption en", "detect cat ; dog", "answer en what color is the car on the left", "ocr", "segment cat"]
FAMILIES = {"pg1": "tiny", "pg2": "tiny2"}  # tiny2: Gemma 2 with a sliding window (8) shorter than every prompt


def pairs(photos, n: int = 10):
    return [photos[i % len(photos)] for i in range(n)], [PROMPTS[(3 * i) % len(PROMPTS)] for i in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_continuous_batching_gives_each_pair_its_answer_alone(checkpoint, photos, family):
    model = PaliGemma.from_pretrained(checkpoint(FAMILIES[family])[0])
    images, prompts = pairs(photos)
    if family == "pg2":
        assert (
            min(len(model.tokenizer.encode_prompt(p, model.config.num_image_tokens)) for p in prompts)
            > model.config.text.sliding_window
        )
    # Two slots for ten pairs of different lengths: rows end at different steps and new ones join mid-way.
    batched = model.generate(images, prompts, max_new_tokens=14, batch_size=2, return_logprobs=True)
    alone = [
        model.generate([im], [p], max_new_tokens=14, return_logprobs=True)[0]
        for im, p in zip(images, prompts, strict=True)
    ]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    for b, a in zip(batched, alone, strict=True):
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), rtol=1e-4, atol=1e-4)
    assert len({g.text for g in batched}) > 2  # random weights still answer different inputs differently
    everything = model.generate(images, prompts, max_new_tokens=14)  # all ten in flight at once
    assert everything == [g.text for g in alone]


def test_rows_end_on_their_own_and_their_slots_are_refilled(checkpoint, photos):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    images, prompts = pairs(photos, 7)
    free = model.generate(images, prompts, max_new_tokens=10, return_logprobs=True)
    # Make a token of the first answer the end-of-sequence token: that row ends early, the others run on.
    model.tokenizer.eos_id = free[0].token_ids[3]
    stopped = model.generate(images, prompts, max_new_tokens=10, return_logprobs=True, batch_size=3)
    for before, after in zip(free, stopped, strict=True):
        cut = before.token_ids.index(model.tokenizer.eos_id) if model.tokenizer.eos_id in before.token_ids else None
        assert after.token_ids == before.token_ids[:cut] and after.stopped_at_eos == (cut is not None)


def test_an_image_shared_by_prompts_goes_through_the_tower_once(checkpoint, photos, monkeypatch):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    seen = []
    original = model.image_features
    monkeypatch.setattr(model, "image_features", lambda px: seen.append(len(px)) or original(px))
    copies = [photos[0].copy() for _ in range(3)] + [photos[1]] * 2  # equal pixels in distinct objects; one object
    model.generate(copies, ["detect cat", "detect dog", "caption en", "ocr", "caption en"], max_new_tokens=3)
    assert sum(seen) == 2


def test_results_arrive_through_the_callback_as_rows_finish(checkpoint, photos):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    images, prompts = pairs(photos, 5)
    arrived = {}
    out = model.generate(images, prompts, max_new_tokens=6, batch_size=2, return_logprobs=True,
                         on_result=lambda i, g: arrived.setdefault(i, g))  # fmt: skip
    assert sorted(arrived) == list(range(5)) and [arrived[i] for i in range(5)] == out


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_the_compiled_step_gives_the_eager_tokens(checkpoint, photos, family):
    folder = checkpoint(FAMILIES[family])[0]
    eager = PaliGemma.from_pretrained(folder)
    compiled = PaliGemma.from_pretrained(folder)
    compiled.runner = Runner(compiled, compile=True, measure=False)  # compiled whatever its speed
    images, prompts = pairs(photos, 6)
    want = eager.generate(images, prompts, max_new_tokens=8, batch_size=4)
    for layout in candidate_layouts(compiled):  # fullgraph=True: a graph break would raise
        compiled.runner.use_layout(layout)
        assert compiled.generate(images, prompts, max_new_tokens=8, batch_size=4) == want, layout
    assert compiled.runner.compiled_step is not None and compiled.runner.choice.step.compiled


@pytest.mark.slow
def test_a_model_loaded_with_compile_times_the_compiled_step_and_keeps_the_faster(checkpoint, photos):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0], compile=True)
    eager = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    images, prompts = pairs(photos, 4)
    assert model.generate(images, prompts, max_new_tokens=6) == eager.generate(images, prompts, max_new_tokens=6)
    (choice,) = model.runner.choices.values()
    assert any(name.startswith("compiled") for name in choice.step_ms)  # timed beside the eager step
    assert choice.compile_s is not None and choice.compile_s > 0


def test_a_copied_model_gets_its_own_runner(checkpoint, photos):
    import copy
    import pickle

    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    want = model.generate(photos[:2], "caption en", max_new_tokens=5)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.runner is not model.runner and other.runner.model is other
        assert other.generate(photos[:2], "caption en", max_new_tokens=5) == want
