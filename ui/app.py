"""The gradio page: layout and wiring only; what each button does lives in `ui.logic`.

The events that take the image run with `preprocess=False`: the functions get gradio's file record (already
checked to be in gradio's upload folder) and open the file themselves, so that an unreadable image becomes a
message on the page rather than gradio's generic error.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

# Before gradio is imported: no version check or usage statistics sent anywhere.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ui.logic import (  # noqa: E402
    EXAMPLES,
    MAX_NEW_TOKENS,
    TABLE_HEADERS,
    TASK_LABELS,
    TASK_NAMES,
    Settings,
    Workbench,
    describe_upload,
    visible_fields,
)

CSS = """
#ui-message p { margin: 0.2em 0; }
#ui-message strong, #ui-status strong { color: var(--error-text-color, #b91c1c); }
"""


def _path(payload) -> str | None:
    """The server-side path of an image component's raw value (a FileData dict), or None."""
    if isinstance(payload, dict):
        return payload.get("path")
    return payload or None


def _table(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def _model_panel(bench: Workbench) -> SimpleNamespace:
    """The Model accordion: checkpoint folder, optional mask decoder, dtype, device and Load."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    device = bench.model.device.type if bench.model is not None else devices[-1]
    with gr.Accordion("Model", open=bench.model is None, elem_id="ui-model") as panel:
        with gr.Row():
            folder = gr.Textbox(
                value=bench.folder or "", label="Checkpoint folder", placeholder="path/to/paligemma2-3b-mix-224",
                scale=4, max_lines=1, elem_id="ui-folder",
            )  # fmt: skip
            vae = gr.Textbox(
                label="Mask decoder (optional)", placeholder="vae-oid.npz", scale=2, max_lines=1, elem_id="ui-vae"
            )
            adapter = gr.Textbox(
                label="LoRA adapter (optional)",
                placeholder="runs/round1/best",
                scale=2,
                max_lines=1,
                elem_id="ui-adapter",
            )
            dtype = gr.Dropdown(["float32", "bf16", "fp16"], value="float32", label="dtype", scale=1)
            device_box = gr.Dropdown(devices, value=device, label="device", scale=1)
        load = gr.Button("Load", elem_id="ui-load")
    return SimpleNamespace(panel=panel, folder=folder, vae=vae, adapter=adapter, dtype=dtype, device=device_box,
                           load=load)  # fmt: skip


def _task_fields() -> SimpleNamespace:
    """The task choice and the fields it reads (shown or hidden as the task asks)."""
    task = gr.Radio([(TASK_LABELS[t], t) for t in TASK_NAMES], value="caption", label="Task", elem_id="ui-task")
    shown = visible_fields("caption")
    with gr.Row():
        classes = gr.Textbox(
            label="Classes", placeholder="cat ; dog", info="separated by ;", max_lines=1, scale=4,
            visible=shown["classes"], elem_id="ui-classes",
        )  # fmt: skip
        question = gr.Textbox(
            label="Question", placeholder="what is the man holding?", max_lines=1, scale=4,
            visible=shown["question"], elem_id="ui-question",
        )  # fmt: skip
        prompt = gr.Textbox(
            label="Prompt", placeholder="e.g. detect car ; person, or a fine-tuned model's phrase",
            max_lines=1, scale=4, visible=shown["prompt"], elem_id="ui-prompt",
        )  # fmt: skip
        lang = gr.Textbox(
            value="en", label="Language", info="en, fr, de, ja, ...", max_lines=1, scale=1,
            min_width=100, visible=shown["lang"], elem_id="ui-lang",
        )  # fmt: skip
    return SimpleNamespace(task=task, classes=classes, question=question, prompt=prompt, lang=lang)


def _settings() -> list:
    """The Generation settings accordion: max new tokens, sampling, temperature, top-p, seed (in that order)."""
    with gr.Accordion("Generation settings", open=False, elem_id="ui-settings"):
        max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=64, step=1, label="Max new tokens")
        do_sample = gr.Checkbox(False, label="Sample (greedy when off)")
        with gr.Row():
            temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
        seed = gr.Number(None, label="Seed (empty: a new one each run)", precision=0)
    return [max_new_tokens, do_sample, temperature, top_p, seed]


def _answer_column() -> list:
    """What Generate fills: message, drawn image, answer, objects table, raw output (in that order)."""
    message = gr.Markdown(elem_id="ui-message")
    annotated = gr.Image(
        type="pil", format="png", label="Answer drawn", interactive=False, height=360, elem_id="ui-annotated"
    )
    answer = gr.Textbox(label="Answer", interactive=False, elem_id="ui-answer")
    objects = gr.Dataframe(
        _table([]), label="Objects (boxes in pixels: x0, y0, x1, y1)", interactive=False, elem_id="ui-objects"
    )
    raw = gr.Textbox(label="Raw output", interactive=False, lines=2, elem_id="ui-raw")
    return [message, annotated, answer, objects, raw]


def build_app(bench: Workbench) -> gr.Blocks:
    """The page for one Workbench (one model per server, shared by every browser tab)."""
    with gr.Blocks(title="PaliGemma", analytics_enabled=False) as demo:
        gr.Markdown("## PaliGemma: try a checkpoint on one image")
        status = gr.Markdown(bench.status(), elem_id="ui-status")
        model = _model_panel(bench)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = gr.Image(
                    type="filepath", label="Image", sources=["upload", "clipboard"], height=360, elem_id="ui-image"
                )
                f = _task_fields()
                settings = _settings()
                generate = gr.Button("Generate", variant="primary", elem_id="ui-generate")
                gr.Examples(EXAMPLES, inputs=[f.task, f.lang, f.classes, f.question, f.prompt], label="Example prompts")
            with gr.Column(scale=1):
                outputs = _answer_column()

        def on_task(name: str):
            shown = visible_fields(name)
            return [gr.update(visible=shown[k]) for k in ("classes", "question", "prompt", "lang")]

        def on_generate(image_payload, task, lang, classes, question, prompt, n, sample, temp, top_p, seed):
            out = bench.run(_path(image_payload), task, lang, classes, question, prompt,
                            Settings(n, sample, temp, top_p, seed))  # fmt: skip
            note = f"Prompt `{out.prompt}`. {out.message}" if out.prompt else out.message
            return note, out.image, out.answer, _table(out.rows), out.text

        def on_load(folder: str, dtype: str, device: str, vae: str, adapter: str):
            said = bench.load(folder, dtype, device, vae, adapter)
            if said.startswith("**Error:**"):
                return f"{said}\n\n{bench.status()}", gr.update(open=True)
            return said, gr.update(open=False)

        f.task.change(on_task, f.task, [f.classes, f.question, f.prompt, f.lang], queue=False)
        image.upload(lambda p: describe_upload(_path(p)), image, outputs[0], preprocess=False, queue=False)
        image.clear(lambda: "", None, outputs[0], queue=False)
        inputs = [image, f.task, f.lang, f.classes, f.question, f.prompt, *settings]
        generate.click(on_generate, inputs, outputs, preprocess=False, concurrency_limit=1)
        model.load.click(on_load, [model.folder, model.dtype, model.device, model.vae, model.adapter],
                         [status, model.panel],
                         concurrency_limit=1)  # fmt: skip
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, block: bool = True):
    """Serve the page. block=False returns (app, local URL) at once and leaves the server in a thread (tests);
    block=True prints where the page is and serves until Ctrl+C."""
    app, url, share_url = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=False,
        show_error=False,
        prevent_thread_lock=True,
        quiet=True,
        css=CSS,
        ssr_mode=False,
        mcp_server=False,
    )
    if block:
        print(f"Serving on {url}" + (f" and {share_url}" if share_url else "") + " (Ctrl+C to stop)", flush=True)
        demo.block_thread()
    return app, url
