"""The web page's logic (ui.logic) without a browser: every mistake a user can make comes back as a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from model import Generation
from ui.logic import (
    TASK_NAMES,
    Settings,
    UserError,
    Workbench,
    build_task,
    check_settings,
    describe_upload,
    md,
    read_image,
    table_rows,
    visible_fields,
)

ROOT = Path(__file__).resolve().parents[2]


def answer(tokens: list[str], logprobs: list[float]) -> Generation:
    return Generation("".join(tokens), list(range(len(tokens))), tokens, logprobs, True)


# <loc0100><loc0200><loc0500><loc0700> cat ; <loc0010><loc0020><loc0030><loc0040> dog
DETECT_TOKENS = ["<loc0100>", "<loc0200>", "<loc0500>", "<loc0700>", " cat", " ;", " <loc0010>", "<loc0020>"]
DETECT_TOKENS += ["<loc0030>", "<loc0040>", " dog", "<eos>"]
DETECT = answer(DETECT_TOKENS, [-0.1] * 5 + [-3.0] + [-0.5] * 5 + [-0.01])
CAPTION = answer([" a", " cat", "<eos>"], [-0.2, -0.4, -0.01])


@pytest.fixture
def bench(checkpoint):
    """A Workbench with the tiny checkpoint loaded; its generate records its arguments and returns `bench.canned`."""
    b = Workbench()
    assert b.load(str(checkpoint("tiny")[0])).startswith("Loaded")
    b.calls, b.canned = [], DETECT

    def generate(images, prompts, **kwargs):
        b.calls.append((images, prompts, kwargs))
        if isinstance(b.canned, Exception):
            raise b.canned
        return [b.canned]

    b.model.generate = generate
    return b


@pytest.fixture
def broken(tmp_path) -> Path:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    return path


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"task": "caption"}, "caption en"),
        ({"task": "caption", "lang": " "}, "caption en"),  # an emptied language box means English
        ({"task": "describe", "lang": "fr", "classes": "cat"}, "describe fr"),  # other tasks' fields are ignored
        ({"task": "answer", "question": " what is it? "}, "answer en what is it?"),
        ({"task": "ocr", "prompt": "ignored"}, "ocr"),
        ({"task": "detect", "classes": "cat ; dog ;"}, "detect cat ; dog"),
        ({"task": "segment", "classes": "person"}, "segment person"),
        ({"task": "raw", "prompt": " detect rocket "}, "detect rocket"),
        ({"task": "detect", "classes": "cat", "question": None, "prompt": None}, "detect cat"),  # hidden boxes
    ],
)
def test_fields_build_the_prompt(fields, expected):
    assert build_task(**fields).prompt() == expected


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"task": "detect", "classes": ""}, "at least one class"),
        ({"task": "segment", "classes": " ; "}, "at least one class"),
        ({"task": "answer", "question": "  "}, "Type a question"),
        ({"task": "raw", "prompt": ""}, "prompt is empty"),
        ({"task": "detect", "classes": "c<at"}, "without ';', '&lt;'"),  # the grammar's characters, escaped
        ({"task": "caption", "lang": "e n"}, "language code"),
        ({"task": "translate"}, "Unknown task"),
    ],
)
def test_fields_a_task_cannot_use_say_what_to_fix(fields, message):
    with pytest.raises(UserError, match=message):
        build_task(**fields)


def test_every_task_shows_only_its_fields():
    assert visible_fields("caption") == {"lang": True, "classes": False, "question": False, "prompt": False}
    assert visible_fields("answer") == {"lang": True, "classes": False, "question": True, "prompt": False}
    assert visible_fields("detect") == {"lang": False, "classes": True, "question": False, "prompt": False}
    assert visible_fields("raw") == {"lang": False, "classes": False, "question": False, "prompt": True}
    assert not any(visible_fields("ocr").values())
    assert set(TASK_NAMES) == {"caption", "describe", "answer", "ocr", "detect", "segment", "raw"}


def test_images_are_read_upright_in_rgb_or_refused_with_their_name(photo_paths, broken, tmp_path):
    assert read_image(photo_paths[0]).mode == "RGB"
    with pytest.raises(UserError, match="Upload an image first"):
        read_image(None)
    with pytest.raises(UserError, match="Cannot read image broken.jpg") as e:
        read_image(broken)
    assert str(tmp_path) not in str(e.value)  # the server's temporary folder is not shown
    assert describe_upload(photo_paths[1]) == "chelsea.png: 451 × 300 px."
    assert describe_upload(broken).startswith("**Error:** Cannot read image broken.jpg")
    assert describe_upload(None) == ""


@pytest.mark.parametrize("kind", ["rgba", "gray16"])
def test_the_page_decodes_a_file_to_the_pixels_the_job_labels(kind, photo_paths, tmp_path):
    """The page and the label job share one decoder: transparency on white, 16-bit scaled, not a plain convert."""
    import numpy as np

    from labeling import prepare

    coffee = np.asarray(Image.open(photo_paths[2]).convert("RGBA")).copy()
    coffee[:, :150, 3] = 0  # a transparent band: a plain RGB convert would show what is under it
    gray = np.asarray(Image.open(photo_paths[2]).convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(coffee) if kind == "rgba" else Image.fromarray(gray)
    path = tmp_path / f"{kind}.png"
    image.save(path)
    page = np.asarray(read_image(path))
    job = prepare({"image_id": 1, "path": str(path), "prompt": "ocr"}, size=64)
    assert (job["width"], job["height"]) == (page.shape[1], page.shape[0]) and job["error"] == ""
    resized = np.asarray(Image.fromarray(page).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(resized, job["pixels"])
    if kind == "rgba":
        assert (page[:, :150] == 255).all()  # white where transparent
    else:
        assert page.max() > 200 and np.array_equal(page[..., 0], (gray // 257).astype(np.uint8))  # scaled to 8 bits


@pytest.mark.parametrize(
    "settings, message",
    [
        (Settings(max_new_tokens=0), "between 1 and 512"),
        (Settings(max_new_tokens=10_000), "between 1 and 512"),
        (Settings(top_p=0.0), "Top-p"),
        (Settings(do_sample=True, temperature=0.0), "Temperature must be above 0"),
        (Settings(seed="x"), "Generation settings"),  # type: ignore[arg-type]
    ],
)
def test_bad_generation_settings_give_a_message(settings, message):
    with pytest.raises(UserError, match=message):
        check_settings(settings)


def test_settings_from_sliders_become_the_types_generate_takes():
    # sliders and number boxes send floats; an emptied seed box sends None or ""
    assert check_settings(Settings(32.0, True, 0.7, 0.9, 3.0)) == Settings(32, True, 0.7, 0.9, 3)
    assert check_settings(Settings(seed="")).seed is None
    assert check_settings(Settings(do_sample=False, temperature=0.0)).temperature == 0.0  # unused when greedy


def test_without_a_model_generate_says_how_to_load_one(photo_paths):
    bench = Workbench()
    out = bench.run(str(photo_paths[0]), "caption")
    assert out.message.startswith("**Error:** No model is loaded") and out.image is None and out.rows == []
    assert "No model loaded" in bench.status()


def test_detect_gives_text_rows_and_a_drawing_with_the_settings_passed_through(bench, photo_paths):
    settings = Settings(max_new_tokens=20, do_sample=True, temperature=0.5, top_p=0.8, seed=7)
    out = bench.run(str(photo_paths[1]), "detect", classes="cat ; dog", settings=settings)
    assert out.error == "" and out.prompt == "detect cat ; dog" and out.text == DETECT.text
    (images, prompts, kwargs) = bench.calls[0]
    assert prompts == ["detect cat ; dog"] and images[0].size == (451, 300)
    kwargs.pop("on_result")  # answers are parsed as they arrive
    assert kwargs == dict(max_new_tokens=20, do_sample=True, temperature=0.5, top_p=0.8, seed=7, return_logprobs=True)
    # <loc0100><loc0200><loc0500><loc0700>: y0, x0, y1, x1 in 1024 bins of 1023 steps; score exp(-0.1)
    cat, dog = out.rows
    assert cat == ["cat", 0.905, round(200 / 1023 * 451, 1), round(100 / 1023 * 300, 1), round(700 / 1023 * 451, 1),
                   round(500 / 1023 * 300, 1), "no"]  # fmt: skip
    assert dog[0] == "dog" and dog[1] == 0.607  # exp(-0.5): the separator's token belongs to neither object
    original = Image.open(photo_paths[1]).convert("RGB")
    assert out.image.size == original.size and out.image.tobytes() != original.tobytes()
    assert "12 tokens in" in out.message and out.answer == ""


def test_a_text_task_gives_the_answer_and_its_score(bench, photo_paths):
    bench.canned = CAPTION
    out = bench.run(str(photo_paths[0]), "caption", lang="en")
    assert out.answer.startswith("a cat  (score 0.7") and out.rows == [] and out.text == " a cat<eos>"


def test_errors_on_the_page_never_raise(bench, photo_paths, broken):
    assert "Cannot read image broken.jpg" in bench.run(str(broken), "caption").message
    assert "prompt is empty" in bench.run(str(photo_paths[0]), "raw", prompt=" ").message
    assert "Upload an image first" in bench.run(None, "ocr").message
    assert bench.calls == []  # nothing reached the model
    bench.canned = RuntimeError("CUDA out of memory")
    out = bench.run(str(photo_paths[0]), "ocr")
    assert out.message == "**Error:** generation failed: RuntimeError: CUDA out of memory"


def test_segment_without_a_mask_decoder_says_how_to_get_masks(bench, photo_paths):
    bench.canned = answer(["<loc0100>", "<loc0200>", "<loc0500>", "<loc0700>", *[f"<seg{i:03d}>" for i in range(16)],
                           " cat"], [-0.1] * 21)  # fmt: skip
    out = bench.run(str(photo_paths[1]), "segment", classes="cat")
    assert out.rows[0][0] == "cat" and out.rows[0][-1] == "no" and "Masks not drawn" in out.message


def test_segment_with_a_mask_decoder_draws_the_masks(bench, photo_paths, tmp_path):
    from testing.vae import write_random_vae_npz

    vae = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8)
    generate = bench.model.generate
    assert bench.load(bench.folder, vae=vae).startswith("Loaded") and "masks from `vae.npz`" in bench.status()
    bench.model.generate = generate
    tokens = ["<loc0100>", "<loc0200>", "<loc0500>", "<loc0700>", *[f"<seg{i:03d}>" for i in range(16)], " cat"]
    bench.canned = answer(tokens, [-0.1] * 21)
    out = bench.run(str(photo_paths[1]), "segment", classes="cat")
    assert out.rows[0][-1] == "yes" and "Masks not drawn" not in out.message


def test_loading_a_bad_folder_keeps_the_model_and_says_why(bench, tmp_path):
    model = bench.model
    said = bench.load(str(tmp_path))
    assert said.startswith("**Error:** cannot load the checkpoint") and "config.json" in said
    assert bench.load("  ").startswith("**Error:** give the path of a checkpoint folder")
    (tmp_path / "vae.npz").write_bytes(b"not an npz")
    said = bench.load(bench.folder, vae=str(tmp_path / "vae.npz"))
    assert said.startswith("**Error:** cannot load the mask decoder")
    assert bench.model is model and bench.mask_decoder is None
    assert bench.status().startswith(f"Model: `{Path(bench.folder).name}` (")


def test_table_rows_mark_unknown_scores_and_unlabelled_objects():
    from tasks import Raw

    result = Raw("find it").parse("<loc0000><loc0000><loc0511><loc0511>", width=100, height=50)
    assert table_rows(result) == [["(no label)", "", 0.0, 0.0, 50.0, 25.0, "no"]]
    assert table_rows(build_task("caption").parse("a cat")) == []


def test_markdown_from_outside_is_escaped():
    assert md("a_b*c <x> `q`") == "a\\_b\\*c &lt;x&gt; \\`q\\`"


def test_command_line_defaults_are_local_and_private():
    from ui.__main__ import parse_args

    args = parse_args([])
    assert (args.host, args.port, args.share, args.checkpoint) == ("127.0.0.1", 7860, False, None)


def test_command_with_a_bad_checkpoint_exits_with_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ui", "--checkpoint", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: --checkpoint: ") and "config.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_page_is_built_with_no_analytics():
    pytest.importorskip("gradio")
    from ui.app import build_app

    demo = build_app(Workbench())
    assert demo.analytics_enabled is False
    ids = {b.elem_id for b in demo.blocks.values()}
    assert {"ui-image", "ui-task", "ui-generate", "ui-message", "ui-annotated", "ui-objects", "ui-raw"} <= ids
