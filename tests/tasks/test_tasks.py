"""tasks: prompts, the registry, the command-line form, and results parsed from hand-written generated text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decoders import MaskDecoder, paste_mask
from tasks import (
    TASKS,
    Answer,
    Caption,
    Describe,
    Detect,
    ObjectsResult,
    Ocr,
    Raw,
    Segment,
    TextResult,
    get_task,
    parse_classes,
    task_from_cli,
)
from testing.vae import write_random_vae_npz


def locs(y0: int, x0: int, y1: int, x1: int) -> str:
    return "".join(f"<loc{i:04d}>" for i in (y0, x0, y1, x1))


SEGS = "".join(f"<seg{i:03d}>" for i in range(16))

PROMPTS = [
    # (task, expected prompt)
    (Caption(), "caption en"),  # default language
    (Caption(lang="de"), "caption de"),  # language option
    (Describe(lang="es"), "describe es"),  # describe shares caption's options
    (Answer("what is on the table?"), "answer en what is on the table?"),  # VQA
    (Answer(" how many? ", lang="fr"), "answer fr how many?"),  # outer spaces dropped
    (Ocr(), "ocr"),  # no options
    (Detect(["cat", "dog"]), "detect cat ; dog"),  # classes joined with " ; "
    (Detect([" 猫 ", "red car"]), "detect 猫 ; red car"),  # names stripped, any script
    (Segment(("person",)), "segment person"),  # a tuple works too
    (Raw("the red car on the left"), "the red car on the left"),  # free prompt, as is
]


@pytest.mark.parametrize(("task", "prompt"), PROMPTS)
def test_prompts(task: object, prompt: str) -> None:
    assert task.prompt() == prompt  # type: ignore[attr-defined]


BAD_OPTIONS = [
    # (constructor, expected message)
    (lambda: Caption(lang="en us"), "language code"),  # a space would leak into the prompt
    (lambda: Caption(lang=""), "language code"),  # empty
    (lambda: Answer(""), "question"),  # empty question
    (lambda: Answer("a\nb"), "one-line"),  # newline ends the prompt early
    (lambda: Detect([]), "at least one class"),  # no classes
    (lambda: Detect(["cat ; dog"]), "without ';'"),  # a separator inside a name
    (lambda: Detect(["<loc0001>"]), "without ';', '<'"),  # a token inside a name
    (lambda: Detect("cat ; dog"), "parse_classes"),  # a string instead of a list
    (lambda: Raw("   "), "prompt"),  # blank prompt
]


@pytest.mark.parametrize(("make", "message"), BAD_OPTIONS)
def test_bad_options_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_registry_knows_every_task() -> None:
    assert sorted(TASKS) == ["answer", "caption", "describe", "detect", "ocr", "raw", "segment"]
    assert get_task("detect", classes=["cat", "dog"]) == Detect(("cat", "dog"))
    assert get_task("caption", lang=None) == Caption()  # None means "default"
    assert get_task("segment", classes="cat ; dog").prompt() == "segment cat ; dog"  # command-line form


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown task 'dettect'; known tasks: answer, caption, describe, detect"):
        get_task("dettect")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("caption", {"classes": ["cat"]}, r"takes options \(lang\) but got classes"),  # option of another task
        ("detect", {}, "needs options"),  # missing classes
        ("answer", {"lang": "en"}, "needs options"),  # missing question
    ],
)
def test_wrong_options_are_named(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_task(name, **options)


@pytest.mark.parametrize(
    ("text", "classes"),
    [
        ("cat ; dog", ["cat", "dog"]),  # the prompt's own form
        ("cat;dog", ["cat", "dog"]),  # no spaces
        (" red car ;  traffic light ; ", ["red car", "traffic light"]),  # spaces inside kept, trailing ';' harmless
        ("", []),  # nothing
    ],
)
def test_parse_classes(text: str, classes: list[str]) -> None:
    assert parse_classes(text) == classes


@pytest.mark.parametrize(
    ("args", "prompt"),
    [
        ({"name": "detect", "classes": "cat ; dog"}, "detect cat ; dog"),  # --classes
        ({"name": "answer", "prompt": "what color?", "lang": "en"}, "answer en what color?"),  # --prompt = question
        ({"name": "raw", "prompt": "segment the left cat"}, "segment the left cat"),  # --prompt = whole prompt
        ({"name": "caption", "lang": "ja"}, "caption ja"),  # --lang
    ],
)
def test_task_from_cli(args: dict, prompt: str) -> None:
    assert task_from_cli(**args).prompt() == prompt


def test_task_from_cli_rejects_a_prompt_for_fixed_prompt_tasks() -> None:
    with pytest.raises(ValueError, match="takes no --prompt"):
        task_from_cli("ocr", prompt="read it")


# --- results ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat on a mat<eos>", "a cat on a mat"),  # end token dropped
        ("  two  <eos><pad><pad>", "two"),  # padding and outer spaces dropped
        ("line 1\nline 2", "line 1\nline 2"),  # OCR keeps inner whitespace
        ("", ""),  # empty generation
    ],
)
def test_text_results(text: str, expected: str) -> None:
    for task in (Caption(), Ocr(), Answer("q?")):
        result = task.parse(text)
        assert result == TextResult(text=expected, raw=text, score=None)
        assert result.object_rows() == []


def test_text_score_covers_the_answer_only() -> None:
    tokens, logprobs = ["two", " cats", "<eos>"], [-0.1, -0.3, -30.0]
    result = Answer("how many?").parse("".join(tokens), tokens=tokens, logprobs=logprobs)
    assert result.text == "two cats"
    assert result.score == pytest.approx(math.exp(-0.2))


def test_detect_result() -> None:
    text = locs(0, 0, 1023, 511) + " cat ; " + locs(100, 100, 200, 200) + " bird ; <loc0001><loc0002><loc0003> dog<eos>"
    result = Detect(["dog", "cat"]).parse(text, width=640, height=480)
    assert isinstance(result, ObjectsResult)
    assert [o.label for o in result.objects] == ["cat", "bird"]
    assert result.report.dropped == {"too_few_locs": 1}
    dets = result.detections()
    assert len(dets) == 2
    np.testing.assert_allclose(dets.xyxy[0], [0, 0, 511 / 1023 * 640, 480])
    assert list(dets.class_id) == [1, -1]  # index in the prompt's classes; "bird" was not asked for
    assert dets.mask is None and dets.confidence is None  # no decoder, no log-probs
    rows = result.object_rows()
    assert rows[0] == {"label": "cat", "box": list(dets.xyxy[0]), "score": None, "mask": None}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> MaskDecoder:
    return MaskDecoder.from_npz(write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae.npz", codebook_dim=8))


def test_segment_result_with_masks_and_scores(decoder: MaskDecoder) -> None:
    first = locs(0, 0, 511, 511) + SEGS + " cat"
    second = locs(511, 511, 1023, 1023) + " dog"  # box only
    tokens = [first[:40], first[40:], " ; ", second, "<eos>"]
    logprobs = [-0.2, -0.4, -9.0, -0.5, -9.0]
    result = Segment(["cat", "dog"]).parse(
        "".join(tokens), width=53, height=37, tokens=tokens, logprobs=logprobs, mask_decoder=decoder
    )
    cat_mask, dog_mask = result.masks
    assert cat_mask is not None and cat_mask.shape == (37, 53) and dog_mask is None
    assert not cat_mask[18:, :].any() and not cat_mask[:, 26:].any()  # box edges 18.48, 26.47 round to 18, 26
    raw = decoder.decode(np.array([list(range(16))]))[0]
    np.testing.assert_array_equal(cat_mask, paste_mask(raw, result.objects[0].box, 37, 53))
    dets = result.detections()
    assert dets.mask is not None and dets.mask.shape == (2, 37, 53) and not dets.mask[1].any()
    np.testing.assert_allclose(dets.confidence, [math.exp(-0.3), math.exp(-0.5)])
    rows = result.object_rows()
    assert rows[0]["mask"]["size"] == [37, 53] and rows[1]["mask"] is None


def test_segment_without_decoder_keeps_codes_but_no_masks() -> None:
    result = Segment(["cat"]).parse(locs(0, 0, 511, 511) + SEGS + " cat", width=10, height=10)
    assert result.objects[0].seg_tokens == tuple(range(16))
    assert result.masks == (None,)


def test_raw_prompt_reads_referring_segmentation_without_label(decoder: MaskDecoder) -> None:
    result = Raw("the cat").parse(locs(0, 0, 1023, 1023) + SEGS + "<eos>", width=8, height=6, mask_decoder=decoder)
    (obj,) = result.objects
    assert obj.label == "" and result.masks[0] is not None and result.report.clean


def test_object_tasks_need_the_image_size() -> None:
    with pytest.raises(ValueError, match="width and height"):
        Detect(["cat"]).parse(locs(0, 0, 5, 5) + " cat")
