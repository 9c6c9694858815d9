"""Model replicas: the stateful stage of the pipeline, one Ray actor per GPU (or CPU slot), loaded once.

`Replica` is the callable class given to `Dataset.map_batches`: it loads a backend in `__init__` and turns each
batch of decoded images into output rows (DESIGN.md §7) in `__call__`. Backends share one small interface,
`generate(images, prompts, max_new_tokens) -> list[Generation]`, so our model and transformers'
`PaliGemmaForConditionalGeneration` run behind the same pipeline and give the same kind of rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from model.generation import Generation

MASK_TYPE = pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])
OBJECT_TYPE = pa.struct(
    [("label", pa.string()), ("box", pa.list_(pa.float64())), ("score", pa.float64()), ("mask", MASK_TYPE)]
)
# The output schema (DESIGN.md §7); every part file has exactly these columns in this order.
ROW_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("task", pa.string()),
        ("prompt", pa.string()),
        ("text", pa.string()),
        ("objects", pa.list_(OBJECT_TYPE)),
        ("error", pa.string()),
        ("model", pa.string()),
        ("seconds", pa.float64()),
    ]
)

# Test-only: a path; the first replica call that finds no file there creates it and kills its own process, so
# that tests can check a crashed replica's batch is redone and every input still appears exactly once.
CRASH_ONCE_ENV = "PALIGEMMA_TEST_CRASH_ONCE"


class Backend(Protocol):
    name: str

    def generate(self, images: list, prompts: list[str], max_new_tokens: int) -> list[Generation]: ...


class NativeBackend:
    """Our PaliGemma (model/)."""

    name = "native"

    def __init__(self, checkpoint: str, dtype: str | None, device: str | None):
        from model import PaliGemma

        self.model = PaliGemma.from_pretrained(checkpoint, dtype=dtype, device=device)
        self.device = self.model.device

    def generate(self, images: list, prompts: list[str], max_new_tokens: int) -> list[Generation]:
        return self.model.generate(images, prompts, max_new_tokens=max_new_tokens, return_logprobs=True)


class TransformersBackend:
    """transformers' PaliGemmaForConditionalGeneration on the same folder, fed the same token ids and pixels as
    ours (our tokenizer and image processor), greedy, with per-token log-probabilities for scores."""

    name = "transformers"

    def __init__(self, checkpoint: str, dtype: str | None, device: str | None):
        import torch
        from transformers import PaliGemmaForConditionalGeneration

        from model.image_processing import ImageProcessor
        from model.loading import read_config, resolve_dtype
        from model.tokenizer import PromptTokenizer

        folder = Path(checkpoint)
        config = read_config(folder)
        self.tokenizer = PromptTokenizer.from_file(folder / "tokenizer.json")
        self.processor = ImageProcessor.from_pretrained(folder, config.vision.image_size)
        self.num_image_tokens = config.num_image_tokens
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device or "cpu")
        hf = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=self.dtype)
        self.model = hf.to(self.device).eval()

    def generate(self, images: list, prompts: list[str], max_new_tokens: int) -> list[Generation]:
        import torch

        tok = self.tokenizer
        ids, valid = tok.batch(prompts, self.num_image_tokens)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=valid.long().to(self.device),
                token_type_ids=torch.zeros_like(ids).to(self.device),
                pixel_values=self.processor(images).to(self.device, self.dtype),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_id,
                pad_token_id=tok.pad_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        new = out.sequences[:, ids.shape[1] :]
        logits = torch.stack(out.logits, 1).float()  # [B, N, V]
        logprobs = torch.log_softmax(logits, -1).gather(-1, new[..., None])[..., 0]
        results = []
        for row, lps in zip(new.tolist(), logprobs.tolist(), strict=True):
            stopped = tok.eos_id in row
            n = row.index(tok.eos_id) if stopped else len(row)
            results.append(Generation(tok.decode(row[:n]), row[:n], tok.pieces(row[:n]), lps[:n], stopped))
        return results


BACKENDS = {"native": NativeBackend, "transformers": TransformersBackend}


def task_for_prompt(prompt: str):
    """The task that reads the answer to a manifest row's own prompt: detect/segment with the prompt's classes,
    caption/describe/ocr by name, and the free `raw` task (text plus any <loc> objects) for anything else."""
    from tasks import get_task, parse_classes
    from tasks.raw import Raw

    word, _, rest = prompt.strip().partition(" ")
    try:
        if word in ("detect", "segment") and parse_classes(rest):
            return get_task(word, classes=rest)
        if word in ("caption", "describe") and rest.strip() and " " not in rest.strip():
            return get_task(word, lang=rest.strip())
        if word == "ocr" and not rest.strip():
            return get_task("ocr")
    except ValueError:
        pass
    return Raw(prompt)


class Replica:
    """A model replica for `map_batches`: decoded images in, output rows (ROW_SCHEMA) out.

    Rows whose image failed to decode pass straight through with their error. A batch whose generation raises is
    retried one row at a time, so one bad input cannot take its batch-mates with it.
    """

    def __init__(
        self,
        checkpoint: str,
        task: dict,
        backend: str = "native",
        device: str | None = None,
        dtype: str | None = None,
        vae: str | None = None,
        max_new_tokens: int = 64,
        model_name: str | None = None,
        threads: int | None = None,  # torch threads; -N means this machine's CPUs / N; None leaves torch's default
        crash_once: str | None = None,
    ):
        import torch

        from tasks import task_from_cli

        if threads and threads < 0:  # -N: share this machine's cores among N replicas
            threads = max(1, (os.cpu_count() or 1) // -threads)
        if threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        self.backend: Backend = BACKENDS[backend](checkpoint, dtype, device)
        self.task = task_from_cli(**task)
        self.tasks_by_prompt = {self.task.prompt(): self.task}
        self.mask_decoder = None
        if vae:
            from decoders import MaskDecoder

            self.mask_decoder = MaskDecoder.from_npz(vae, device=self.backend.device)
        self.max_new_tokens = max_new_tokens
        self.model_name = model_name or Path(checkpoint).name
        self.crash_once = crash_once

    def task_for(self, prompt: str):
        if prompt not in self.tasks_by_prompt:
            self.tasks_by_prompt[prompt] = task_for_prompt(prompt)
        return self.tasks_by_prompt[prompt]

    def _maybe_crash(self) -> None:
        if not self.crash_once:
            return
        try:
            fd = os.open(self.crash_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"replica pid {os.getpid()} crashed here\n".encode())
        os.close(fd)
        os._exit(1)  # as abrupt as an out-of-memory kill: no cleanup, no exception to catch

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from PIL import Image

        self._maybe_crash()
        n = len(batch["image_id"])
        prompts = [str(p) for p in batch["prompt"]]
        errors: list[str | None] = [str(e) or None for e in batch["error"]]
        texts: list[str] = [""] * n
        objects: list[list[dict]] = [[] for _ in range(n)]
        ok = [i for i in range(n) if errors[i] is None]
        start = time.perf_counter()
        if ok:
            images = [Image.fromarray(batch["pixels"][i]) for i in ok]
            gens = self._generate(images, [prompts[i] for i in ok])
            for i, gen in zip(ok, gens, strict=True):
                if isinstance(gen, str):
                    errors[i] = gen
                    continue
                texts[i] = gen.text
                try:
                    result = self.task_for(prompts[i]).parse(
                        gen.text,
                        width=int(batch["width"][i]),
                        height=int(batch["height"][i]),
                        tokens=gen.tokens,
                        logprobs=gen.logprobs,
                        mask_decoder=self.mask_decoder,
                    )
                    objects[i] = result.object_rows()
                except Exception as e:  # a parser bug must not lose the row; the text is kept
                    errors[i] = f"cannot parse the answer: {type(e).__name__}: {e}"
        per_image = (time.perf_counter() - start) / max(len(ok), 1)
        columns = {
            "image_id": [int(v) for v in batch["image_id"]],
            "path": [str(v) for v in batch["path"]],
            "width": [int(v) for v in batch["width"]],
            "height": [int(v) for v in batch["height"]],
            "task": [self.task_for(p).name for p in prompts],
            "prompt": prompts,
            "text": texts,
            "objects": objects,
            "error": errors,
            "model": [self.model_name] * n,
            "seconds": [per_image if errors[i] is None else 0.0 for i in range(n)],
        }
        return pa.Table.from_pydict(columns, schema=ROW_SCHEMA)

    def _generate(self, images: list, prompts: list[str]) -> list[Generation | str]:
        """Generations, or an error message per row when generation fails for that row alone."""
        try:
            return self.backend.generate(images, prompts, self.max_new_tokens)
        except Exception as batch_error:
            if len(images) == 1:
                return [f"generation failed: {type(batch_error).__name__}: {batch_error}"]
        out: list[Generation | str] = []
        for image, prompt in zip(images, prompts, strict=True):
            out.extend(self._generate([image], [prompt]))
        return out
