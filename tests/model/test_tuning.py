"""Measure, then choose: the choice is a deterministic function of the timings, and every choice the engine can
make gives the same greedy tokens (it changes speed, never answers)."""

from __future__ import annotations

import logging

import pytest
import torch

from model import PaliGemma
from model.layouts import LAYOUTS, candidate_layouts
from model.runner import Runner
from model.tuning import MARGIN, Choice, StepOption, choose, thread_options, time_calls, time_candidates

EAGER2, EAGER1, COMPILED2 = StepOption(False, 2), StepOption(False, 1), StepOption(True, 2)


@pytest.mark.parametrize(
    ("timings", "kept"),
    [
        ({EAGER2: [10.0, 11.0, 9.0], EAGER1: [6.0, 7.0, 30.0], COMPILED2: [8.0, 8.0, 8.0]}, EAGER1),  # best 9/6/8
        ({EAGER2: [9.0, 30.0, 31.0], EAGER1: [12.0, 12.0, 12.0]}, EAGER2),  # a load passing over two calls
        ({EAGER2: [10.0], EAGER1: [9.8], COMPILED2: [9.9]}, EAGER2),  # 2% faster is within noise: the reference
        ({EAGER2: [10.0], EAGER1: [12.0], COMPILED2: [9.0]}, COMPILED2),  # 10% faster
        ({EAGER2: [5.0], EAGER1: [4.0], COMPILED2: [4.0]}, EAGER1),  # a tie goes to the earlier candidate
        ({EAGER2: [5.0]}, EAGER2),  # one candidate
        ({"row-major": [3.0, 3.1], "column-major": [2.0, 2.2]}, "column-major"),  # layouts, by name
    ],
)
def test_the_choice_is_the_fastest_best_call_beyond_the_margin(timings, kept):
    assert choose(timings) == kept
    assert choose(dict(timings)) == kept  # the same timings, the same choice


def test_the_margin_is_relative_to_the_reference():
    assert choose({"a": [100.0], "b": [100.0 * (1 - MARGIN) - 0.01]}) == "b"
    assert choose({"a": [100.0], "b": [100.0 * (1 - MARGIN) + 0.01]}) == "a"
    assert choose({"a": [1.0], "b": [0.5]}, margin=0.6) == "a"
    with pytest.raises(ValueError, match="nothing"):
        choose({})


@pytest.mark.parametrize(
    ("seconds", "calls"),
    [
        (0.001, 9),  # short calls: as many as fit the budget, at most MAX_CALLS
        (0.02, 4),  # four fill the 75 ms budget
        (0.2, 3),  # long calls: still three while under half a second
        (0.4, 2),  # the second passes half a second
        (2.0, 1),  # a whole step of a large model on a CPU: one timed call
    ],
)
def test_time_calls_spends_a_bounded_budget(seconds, calls):
    clock = [0.0]

    def fn():
        clock[0] += seconds

    assert time_calls(fn, lambda: None, warmup=1, clock=lambda: clock[0]) == pytest.approx([seconds] * calls)


def test_candidates_are_timed_in_rounds_so_a_passing_load_hits_them_alike():
    clock, calls = [0.0], []

    def candidate(name: str, seconds: float):
        def fn():
            calls.append(name)
            clock[0] += seconds

        return fn

    times = time_candidates({"a": candidate("a", 0.01), "b": candidate("b", 0.02)}, lambda: None, warmup=1,
                            clock=lambda: clock[0])  # fmt: skip
    assert calls[:2] == ["a", "b"]  # the warm-up calls
    assert calls[2:] == ["a", "b"] * len(times["a"])  # then a, b, a, b, ...
    assert len(times["a"]) == len(times["b"]) == 4  # the slower one spends the budget: 4 x 20 ms > 75 ms


@pytest.mark.parametrize(("threads", "options"), [(1, (1,)), (2, (2, 1)), (16, (16, 8, 1)), (3, (3, 1))])
def test_thread_options_start_with_every_thread(threads, options):
    assert thread_options(threads) == options


@pytest.mark.parametrize("family", ["tiny", "tiny2"])
def test_every_eager_choice_gives_the_same_tokens(checkpoint, photos, family, monkeypatch):
    model = PaliGemma.from_pretrained(checkpoint(family)[0])
    images = [photos[i % len(photos)] for i in range(5)]
    prompts = ["caption en", "detect cat ; dog", "ocr", "answer en what is this", "segment cat"]
    want = model.generate(images, prompts, max_new_tokens=10, batch_size=3, return_logprobs=True)
    for layout in candidate_layouts(model):
        for threads, prefill_threads in ((1, 2), (2, 1)):
            runner = Runner(model, measure=False)
            runner.use_layout(layout)
            choice = Choice(0, 0, layout, StepOption(False, threads), prefill_threads=prefill_threads)
            monkeypatch.setattr(runner, "tune", lambda slots, length, choice=choice: choice)
            model.runner = runner
            got = model.generate(images, prompts, max_new_tokens=10, batch_size=3, return_logprobs=True)
            assert [g.token_ids for g in got] == [g.token_ids for g in want], (layout, threads)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(w.logprobs), rtol=1e-4, atol=1e-4)
            assert runner.choice is choice and runner.layout == layout


def test_the_measured_choice_is_logged_once_per_bucket_and_kept(checkpoint, photos, caplog):
    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    with caplog.at_level(logging.INFO, logger="model.runner"):
        first = model.generate(photos[:2], "caption en", max_new_tokens=4)
        second = model.generate(photos[:2], "caption en", max_new_tokens=4)
    assert first == second
    lines = [r.getMessage() for r in caplog.records if r.name == "model.runner"]
    assert len(lines) == 1 and "engine choice" in lines[0]
    (choice,) = model.runner.choices.values()
    options = thread_options(torch.get_num_threads())
    layouts = candidate_layouts(model)  # packed where oneDNN can pack and there is memory for the copies
    assert choice.layout in layouts and set(choice.layout_ms) == {f"{x}, {t} threads" for x in layouts for t in options}
    assert set(choice.step_ms) == {str(StepOption(False, t)) for t in options}
    assert set(choice.prefill_ms) == {str(t) for t in options} and choice.prefill_threads in options
    assert not choice.step.compiled  # not asked to compile: never compiled
    assert choice.as_dict()["layout"] == choice.layout == model.runner.layout


@pytest.mark.parametrize("layout", ["column-major", "packed"])
def test_weights_changed_after_a_call_are_followed(checkpoint, photos, layout):
    """Copies made for a layout (packed weights, a column-major tied head) are made again when training changes
    the weights between two calls, so a call never answers with stale weights."""
    folder = checkpoint("tiny")[0]
    model, fresh = PaliGemma.from_pretrained(folder), PaliGemma.from_pretrained(folder)
    if layout not in candidate_layouts(model):
        pytest.skip(f"{layout} weights are not offered on this machine")  # packing needs oneDNN
    model.runner = Runner(model, measure=False)
    model.runner.use_layout(layout)
    before = model.generate(photos[:2], "caption en", max_new_tokens=8)
    for m in (model, fresh):  # what an optimizer step does: the same parameters, changed in place
        with torch.no_grad():
            m.language_model.embed_tokens.weight.copy_(m.language_model.embed_tokens.weight.roll(5, dims=1))
            m.language_model.layers[0].mlp.up_proj.weight.mul_(-2.0)
    after = model.generate(photos[:2], "caption en", max_new_tokens=8)
    assert after == fresh.generate(photos[:2], "caption en", max_new_tokens=8) != before


def test_layouts_keep_the_parameters_and_their_values(checkpoint):
    model = PaliGemma.from_pretrained(checkpoint("tiny2")[0])
    params = dict(model.named_parameters())
    values = {k: v.detach().clone() for k, v in params.items()}
    for layout in candidate_layouts(model):
        model.runner.use_layout(layout)
        assert dict(model.named_parameters()) == params  # the same objects: an optimizer holding them still trains
        assert all(torch.equal(p, values[k]) for k, p in params.items()), layout
    model.runner.use_layout("column-major")
    assert model.language_model.layers[0].self_attn.q_proj.weight.t().is_contiguous()


def test_packed_copies_are_offered_only_when_they_fit(checkpoint, monkeypatch):
    from model import layouts

    model = PaliGemma.from_pretrained(checkpoint("tiny")[0])
    weights = sum(m.weight.numel() * 4 for m in layouts.decoder_linears(model)) + model.head_weight().numel() * 4
    monkeypatch.setattr(layouts, "available_bytes", lambda: int(weights / layouts.PACKED_SHARE) - 1)
    assert "packed" not in candidate_layouts(model)
    monkeypatch.setattr(layouts, "available_bytes", lambda: None)  # unknown free memory: no copies
    assert "packed" not in candidate_layouts(model)
    monkeypatch.setattr(layouts, "available_bytes", lambda: int(weights / layouts.PACKED_SHARE) + 1)
    assert ("packed" in candidate_layouts(model)) == layouts.packing_works(torch.float32)
    assert candidate_layouts(model)[:2] == LAYOUTS[:2]  # row-major, the reference, first
