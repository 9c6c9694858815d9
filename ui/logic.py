"""What the web page does, as plain functions and one small class, testable without a browser or gradio.

`Workbench` holds the one model the server runs (and the optional mask decoder); `Workbench.run` takes the page's
field values and returns an `Outcome`: the raw answer, the parsed text, the objects as table rows and the image
with them drawn, or a message saying what went wrong. Nothing here raises for bad input: every error a user can
cause (no model, an unreadable image, an empty prompt, a bad checkpoint folder) comes back as a message, so the
server keeps serving. Unexpected failures inside the model are caught too, reported in one line, and logged with
their traceback on the server's stderr.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from labeling import ImageDecodeError, open_image
from model import CheckpointError, PaliGemma
from tasks import TASKS

log = logging.getLogger(__name__)

# The tasks offered on the page, in the order shown (text tasks, then object tasks, then a prompt typed in full),
# and how the page names the few whose name is not their label.
TASK_NAMES = tuple(TASKS)  # the registry's order: caption, describe, answer, ocr, detect, segment, raw
TASK_LABELS = {name: {"answer": "answer a question", "ocr": "OCR", "raw": "typed prompt"}.get(name, name)
               for name in TASK_NAMES}  # fmt: skip
# The page's fields and the task option each fills.
FIELD_OPTIONS = {"lang": "lang", "classes": "classes", "question": "question", "prompt": "prompt_text"}


def task_fields(task: str) -> tuple[str, ...]:
    """Which of the page's fields (lang, classes, question, prompt) a task reads: the options it takes."""
    from tasks import task_options

    options = task_options(task)
    return tuple(f for f, option in FIELD_OPTIONS.items() if option in options)


TABLE_HEADERS = ["label", "score", "x0", "y0", "x1", "y1", "mask"]
MAX_NEW_TOKENS = 512

# One click fills the task fields: (task, lang, classes, question, prompt).
EXAMPLES = [
    ["caption", "en", "", "", ""],
    ["detect", "en", "cat ; dog", "", ""],
    ["segment", "en", "person", "", ""],
    ["answer", "en", "", "what is in the picture?", ""],
    ["ocr", "en", "", "", ""],
    ["describe", "fr", "", "", ""],
    ["raw", "en", "", "", "detect rocket ; cloud"],
]


def md(text: str) -> str:
    """Text from outside (a file name, an exception) made safe to show inside a Markdown message."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]#|])", r"\\\1", text)


class UserError(Exception):
    """Something the user can fix from the page; its message is shown as it is."""


@dataclass(frozen=True)
class Settings:
    """Generation settings from the page's accordion (the defaults are the single-image command's)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What the page shows after Generate. `error` is set (and the rest empty) when nothing could be run."""

    error: str = ""
    prompt: str = ""
    text: str = ""  # the raw generated text, special tokens kept
    answer: str = ""  # the parsed answer of a text task, with its score
    rows: list[list] = field(default_factory=list)  # TABLE_HEADERS per object
    image: Image.Image | None = None  # the input with boxes, masks and labels drawn
    note: str = ""  # one line: timing, dropped objects, masks not decoded

    @property
    def message(self) -> str:
        return f"**Error:** {self.error}" if self.error else self.note


def build_task(task: str, lang: str = "en", classes: str = "", question: str = "", prompt: str = ""):
    """The page's fields -> a `tasks` task; UserError with a message that says which field to fill."""
    from tasks import get_task, parse_classes

    lang, classes, question, prompt = (str(v or "").strip() for v in (lang, classes, question, prompt))
    lang = lang or "en"
    if task not in TASK_NAMES:
        raise UserError(f"Unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}.")
    if "classes" in task_fields(task) and not parse_classes(classes):
        raise UserError(f"Give at least one class to {task}, e.g. `cat ; dog`.")
    if task == "answer" and not question:
        raise UserError("Type a question to answer.")
    if task == "raw" and not prompt:
        raise UserError("The prompt is empty: type one, e.g. `caption en` or `detect car`.")
    values = {"lang": lang, "classes": classes, "question": question, "prompt": prompt}
    wanted = {FIELD_OPTIONS[f]: values[f] for f in task_fields(task)}
    try:
        return get_task(task, **wanted)
    except ValueError as e:  # e.g. a class name with '<', a language code with a space, a prompt with a newline
        raise UserError(md(str(e))) from None


def read_image(path: str | Path | None) -> Image.Image:
    """The uploaded file as an upright RGB image; UserError when there is none or it is not an image."""
    if path is None or str(path) == "":
        raise UserError("Upload an image first (drop a file on the image box or click it).")
    name = Path(path).name
    try:
        return open_image(str(path))  # the label job's decoder: transparency on white, 16-bit scaled, upright
    except (OSError, ImageDecodeError) as e:
        detail = str(e).replace(str(path), name)  # PIL names the server's temporary copy; the user knows the name
        raise UserError(f"Cannot read image {md(name)}: {md(detail)}") from None


def visible_fields(task: str) -> dict[str, bool]:
    """Which of the fields lang, classes, question, prompt the page shows for a task."""
    wanted = task_fields(task) if task in TASK_NAMES else ()
    return {name: name in wanted for name in ("lang", "classes", "question", "prompt")}


def describe_upload(path: str | Path | None) -> str:
    """The message shown when a file is dropped: its size, or why it cannot be read."""
    if path is None or str(path) == "":
        return ""
    try:
        image = read_image(path)
    except UserError as e:
        return f"**Error:** {e}"
    return f"{Path(path).name}: {image.width} × {image.height} px."


def check_settings(settings: Settings) -> Settings:
    """Values from sliders and number boxes, checked and turned into the types generate takes."""
    try:
        n = int(settings.max_new_tokens)
        temperature = float(settings.temperature)
        top_p = float(settings.top_p)
        seed = None if settings.seed in (None, "") else int(settings.seed)
    except (TypeError, ValueError) as e:
        raise UserError(f"Generation settings: {md(str(e))}") from None
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise UserError(f"Max new tokens must be between 1 and {MAX_NEW_TOKENS}, not {n}.")
    if settings.do_sample and temperature <= 0:
        raise UserError(f"Temperature must be above 0 when sampling, not {temperature}.")
    if not 0 < top_p <= 1:
        raise UserError(f"Top-p must be in (0, 1], not {top_p}.")
    return Settings(n, bool(settings.do_sample), temperature, top_p, seed)


def table_rows(result) -> list[list]:
    """One row per object: label, score (3 decimals, '' when unknown), box in pixels (1 decimal), mask yes/no."""
    rows = []
    for o, mask in zip(getattr(result, "objects", ()), getattr(result, "masks", ()), strict=True):
        score = "" if o.score is None else round(float(o.score), 3)
        rows.append(
            [o.label or "(no label)", score, *(round(float(v), 1) for v in o.box), "yes" if mask is not None else "no"]
        )
    return rows


class Workbench:
    """The server's model and mask decoder; `load` replaces them, `run` answers one image and prompt.

    One lock serializes loading and generating, so a model is never swapped while it is answering.
    """

    def __init__(self, model: PaliGemma | None = None, folder: str | Path | None = None, mask_decoder=None):
        self.model = model
        self.folder = None if folder is None else str(folder)
        self.mask_decoder = mask_decoder
        self.vae_path: str | None = None
        self.adapter: str | None = None
        self._lock = threading.Lock()

    def status(self) -> str:
        """One line for the page's header: which model answers, or how to load one."""
        if self.model is None:
            return "No model loaded: open the Model panel below, give a checkpoint folder and press Load."
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        size = f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.1f} M"
        masks = f", masks from `{Path(self.vae_path).name}`" if self.vae_path else ""
        masks += f", adapter `{Path(self.adapter).name}`" if self.adapter else ""
        return (
            f"Model: `{Path(self.folder).name}` ({size} parameters, {cfg.vision.image_size} px, "
            f"{str(self.model.dtype).removeprefix('torch.')} on {self.model.device.type}{masks})"
        )

    def load(self, folder: str, dtype: str | None = None, device: str | None = None, vae: str | None = None,
             adapter: str | None = None) -> str:  # fmt: skip
        """Load a checkpoint folder (optionally with a LoRA adapter merged in, and a vae-oid.npz); returns a
        message, never raises."""
        from model.adapters import AdapterError, load_with_adapter

        folder = (folder or "").strip()
        vae = (vae or "").strip() or None
        adapter = (adapter or "").strip() or None
        if not folder:
            return "**Error:** give the path of a checkpoint folder (config.json, tokenizer.json, `*.safetensors`)."
        if dtype in ("", "float32"):
            dtype = None
        start = time.perf_counter()
        try:
            model = load_with_adapter(Path(folder).expanduser(), Path(adapter).expanduser() if adapter else None,
                                      dtype=dtype, device=device or None)  # fmt: skip
        except CheckpointError as e:
            return f"**Error:** cannot load the checkpoint: {md(str(e))}"
        except AdapterError as e:
            return f"**Error:** cannot load the adapter: {md(str(e))}"
        except (OSError, ValueError, RuntimeError) as e:  # an unknown dtype or device, an unreadable file
            log.exception("loading %s failed", folder)
            return f"**Error:** cannot load the checkpoint {md(folder)}: {md(str(e))}"
        decoder = None
        if vae is not None:
            from decoders import MaskDecoder

            try:
                decoder = MaskDecoder.from_npz(Path(vae).expanduser(), device=model.device)
            except (OSError, ValueError, KeyError) as e:
                return f"**Error:** cannot load the mask decoder {md(vae)}: {md(str(e))}"
        with self._lock:
            self.model, self.folder, self.mask_decoder, self.vae_path = model, folder, decoder, vae
            self.adapter = adapter
        return f"Loaded in {time.perf_counter() - start:.1f} s. {self.status()}"

    def run(self, image_path, task: str, lang="en", classes="", question="", prompt="", settings=Settings()) -> Outcome:
        """Answer one image with the task built from the page's fields. Never raises."""
        try:
            if self.model is None:
                raise UserError("No model is loaded: give a checkpoint folder in the Model panel and press Load.")
            task_obj = build_task(task, lang, classes, question, prompt)
            settings = check_settings(settings)
            image = read_image(image_path)
            return self._answer(image, task_obj, settings)
        except UserError as e:
            return Outcome(error=str(e))
        except Exception as e:  # noqa: BLE001 - the page must keep serving whatever the model does
            log.exception("answering task %r failed", task)
            return Outcome(error=f"generation failed ({type(e).__name__}: {md(str(e))}); see the server's log.")

    def _answer(self, image: Image.Image, task, settings: Settings) -> Outcome:
        from labeling import label_batch
        from tasks import ObjectsResult
        from tasks.draw import draw_detections

        with self._lock:
            (labeled,) = label_batch(
                self.model,
                [task],
                [image],
                mask_decoder=self.mask_decoder,
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
            )
            device = self.model.device.type
        row, result, gen = labeled.row, labeled.result, labeled.generation
        if row["error"] is not None:  # the page keeps serving; the server's log keeps the reason too
            log.error("answering %r failed: %s", task.prompt(), row["error"])
            return Outcome(error=md(row["error"]), prompt=task.prompt(), text=row["text"])
        notes = [f"{len(gen.token_ids)} tokens in {row['seconds']:.2f} s on {device}."]
        if isinstance(result, ObjectsResult):
            answer = ""
            drawn = draw_detections(image, result.detections())
            dropped = sum(result.report.dropped.values())
            if dropped and "<loc" in gen.text:
                notes.append(f"{dropped} malformed object(s) dropped ({', '.join(sorted(result.report.dropped))}).")
            has_codes = any(o.seg_tokens is not None for o in result.objects)
            if getattr(task, "decodes_masks", False) and has_codes and self.mask_decoder is None:
                notes.append("Masks not drawn: load a vae-oid.npz in the Model panel (or start with `--vae`).")
        else:
            score = "" if result.score is None else f"  (score {result.score:.3f})"
            answer, drawn = (result.text or "(empty answer)") + score, image
        return Outcome(
            prompt=task.prompt(),
            text=gen.text,
            answer=answer,
            rows=table_rows(result),
            image=drawn,
            note=" ".join(notes),
        )
