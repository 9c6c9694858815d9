"""The scheduler's policy, without a model or torch: admission, prefill groups, slot reuse, images and the order of
results. A simulated run drives it as generation does and checks what must hold at every step."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from model.scheduler import Scheduler, prefill_groups
from model.sequence import Sequence, Status


def seqs(lengths: list[int], images: list[int] | None = None, start: int = 0) -> list[Sequence]:
    images = images if images is not None else list(range(start, start + len(lengths)))
    return [Sequence(start + i, [7] * n, image) for i, (n, image) in enumerate(zip(lengths, images, strict=True))]


def scheduler_with(slots: int, running: int, waiting: int) -> Scheduler:
    """A scheduler with `running` requests in slots 0..running-1 and `waiting` more queued behind them."""
    scheduler = Scheduler(slots)
    for seq in seqs([5] * running):
        scheduler.add(seq)
    if running:
        scheduler.admit()  # nothing runs yet: every one of them is admitted
    for seq in seqs([5] * waiting, start=running):
        scheduler.add(seq)
    return scheduler


def test_the_scheduler_imports_without_torch():
    code = "import sys, model.scheduler, model.sequence; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("slots", "running", "waiting", "admit"),
    [
        (8, 0, 5, True),  # nothing runs: any free slot is worth filling
        (8, 8, 5, False),  # no free slot
        (8, 7, 5, False),  # one free slot of eight: wait for a quarter
        (8, 6, 5, True),  # two free of eight: a quarter
        (8, 7, 1, True),  # every waiting request fits now: no bigger group will come
        (8, 3, 0, False),  # nothing waits
        (16, 13, 9, False),  # three free of sixteen: under a quarter
        (16, 12, 9, True),  # four free of sixteen
        (1, 0, 3, True),  # one slot, empty
    ],
)
def test_admission_waits_for_a_quarter_of_the_slots(slots, running, waiting, admit):
    scheduler = scheduler_with(slots, running, waiting)
    assert len(scheduler.running) == running and len(scheduler.waiting) == waiting
    assert scheduler.should_admit() is admit
    admission = scheduler.admit()
    assert (admission is not None) is admit
    if admit:  # as many as fit, from the head of the queue
        taken = sorted(s.index for g in admission.groups for s in g)
        assert taken == list(range(running, running + min(waiting, slots - running)))


@pytest.mark.parametrize(
    ("lengths", "cap", "groups"),
    [
        ([10, 12, 13, 14, 20], 1000, [[10, 12, 13], [14], [20]]),  # 4 * 10 < 3 * 14: the padding would pass 1/4
        ([20, 10, 16, 15], 1000, [[10], [15, 16, 20]]),  # sorted first; 4 * 15 = 3 * 20 still joins
        ([100] * 7, 350, [[100] * 3, [100] * 3, [100]]),  # the token cap: at most 3 x 100 tokens
        ([500, 40, 40], 300, [[40, 40], [500]]),  # a prompt over the cap runs alone
        ([8], 16384, [[8]]),
    ],
)
def test_prefill_groups_bound_padding_and_tokens(lengths, cap, groups):
    got = prefill_groups(seqs(lengths), cap)
    assert [[s.prompt_len for s in g] for g in got] == groups


def test_groups_keep_queue_order_among_equal_lengths():
    got = prefill_groups(seqs([9, 5, 9, 5]), 1000)
    assert [[s.index for s in g] for g in got] == [[1, 3], [0, 2]]


def test_finished_slots_are_handed_out_again_lowest_first():
    scheduler = scheduler_with(slots=4, running=4, waiting=3)
    assert [scheduler.running[s].index for s in range(4)] == [0, 1, 2, 3]
    finished = scheduler.finish(2, [4, 5], [-0.1, -0.2], stopped_at_eos=True)
    assert (finished.index, finished.slot, finished.status) == (2, None, Status.FINISHED)
    assert finished.token_ids == [4, 5] and finished.logprobs == [-0.1, -0.2] and finished.stopped_at_eos
    scheduler.finish(0, [], [], False)
    admission = scheduler.admit()  # two of four free: the next two requests, into slots 0 and 2
    assert {s.index: s.slot for g in admission.groups for s in g} == {4: 0, 5: 2}
    assert scheduler.free_slots == [] and scheduler.running[0].index == 4


def test_an_image_is_encoded_once_and_let_go_after_its_last_prefill():
    scheduler = Scheduler(slots=2)
    for seq in seqs([5, 5, 5, 5], images=[0, 0, 1, 0]):
        scheduler.add(seq)
    first = scheduler.admit()
    assert first.new_images == (0,)  # two requests of image 0
    assert scheduler.prefilled(first.groups[0]) == []  # image 0 has a third request still waiting
    scheduler.finish(0, [], [], False)
    scheduler.finish(1, [], [], False)
    second = scheduler.admit()
    assert second.new_images == (1,)  # image 0 is still held: not encoded again
    assert sorted(scheduler.prefilled(second.groups[0])) == [0, 1]  # both images' last requests prefilled


def test_results_come_back_in_input_order_whatever_order_rows_finish_in():
    scheduler = scheduler_with(slots=3, running=3, waiting=0)
    with pytest.raises(RuntimeError, match="3 run"):
        scheduler.results()
    for slot in (2, 0, 1):
        scheduler.finish(slot, [slot], [], False)
    assert scheduler.done
    assert [(s.index, s.token_ids) for s in scheduler.results()] == [(0, [0]), (1, [1]), (2, [2])]


@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_run_finishes_every_request_once_within_its_slots(seed):
    rng = random.Random(seed)
    slots, cap = rng.choice([1, 3, 8]), 64
    lengths = [rng.randint(4, 40) for _ in range(rng.randint(1, 30))]
    images = [rng.randint(0, 5) for _ in lengths]
    scheduler = Scheduler(slots, prefill_tokens=cap)
    for seq in seqs(lengths, images):
        scheduler.add(seq)
    budget: dict[int, int] = {}  # slot -> decode steps left before its row ends
    held: set[int] = set()
    finished: list[int] = []
    while not scheduler.done:
        for slot in [s for s, left in budget.items() if left == 0]:
            finished.append(scheduler.finish(slot, [], [], False).index)
            del budget[slot]
        admission = scheduler.admit()
        if admission is not None:
            assert not held & set(admission.new_images)  # never encoded twice while held
            held |= set(admission.new_images)
            for group in admission.groups:
                longest = max(s.prompt_len for s in group)
                assert len(group) == 1 or len(group) * longest <= cap
                assert 4 * min(s.prompt_len for s in group) >= 3 * longest
                assert {s.image for s in group} <= held  # its features were encoded first
                for s in group:
                    assert s.slot not in budget  # a slot holds one row at a time
                    budget[s.slot] = rng.randint(0, 6)
                held -= set(scheduler.prefilled(group))
        assert len(scheduler.running) <= slots and set(budget) == set(scheduler.running)
        for slot in budget:  # one decode step
            budget[slot] = max(0, budget[slot] - 1)
    assert sorted(finished) == list(range(len(lengths))) and not held
    assert [s.index for s in scheduler.results()] == list(range(len(lengths)))
