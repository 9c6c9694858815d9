"""The models a replica can run, behind one small interface:
`generate(images, prompts, max_new_tokens=..., return_logprobs=True, **sampling) -> list[Generation]`.

Our PaliGemma (`native`) and transformers' `PaliGemmaForConditionalGeneration` (`transformers`, the reference
and the speed baseline) load the same checkpoint folder and give the same kind of answers, so the pipeline, the
exports and the scores do not know which one ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from model.generation import Generation


class Backend(Protocol):
    name: str
    image_size: int  # the side of the square the model sees

    def generate(self, images: list, prompts: list[str], *, max_new_tokens: int, **options) -> list[Generation]: ...


class NativeBackend:
    """Our PaliGemma (model/)."""

    name = "native"
    streams_results = True  # generate calls on_result as each row finishes, so answers are parsed meanwhile

    def __init__(self, checkpoint: str, dtype: str | None = None, device: str | None = None,
                 adapter: str | None = None, **load_options):  # fmt: skip
        from model.adapters import load_with_adapter

        self.model = load_with_adapter(checkpoint, adapter, dtype=dtype, device=device, **load_options)
        self.device = self.model.device
        self.image_size = self.model.image_processor.size

    def generate(self, images: list, prompts: list[str], *, max_new_tokens: int, **options) -> list[Generation]:
        options["return_logprobs"] = True
        return self.model.generate(images, prompts, max_new_tokens=max_new_tokens, **options)


class TransformersBackend:
    """transformers' PaliGemmaForConditionalGeneration on the same folder, fed the same token ids and pixels as
    ours (our tokenizer and image processor), greedy, with per-token log-probabilities for scores."""

    name = "transformers"

    def __init__(self, checkpoint: str, dtype: str | None = None, device: str | None = None,
                 adapter: str | None = None, **_):  # fmt: skip
        import torch
        from transformers import PaliGemmaForConditionalGeneration

        from model.image_processing import ImageProcessor
        from model.loading import read_config, resolve_dtype
        from model.tokenizer import PromptTokenizer

        folder = Path(checkpoint)
        config = read_config(folder)
        self.tokenizer = PromptTokenizer.from_file(folder / "tokenizer.json")
        self.processor = ImageProcessor.from_pretrained(folder, config.vision.image_size)
        self.image_size = self.processor.size
        self.num_image_tokens = config.num_image_tokens
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device or "cpu")
        hf = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32 if adapter else self.dtype)
        if adapter:  # peft's own merge, in float32 as ours merges
            from peft import PeftModel

            hf = PeftModel.from_pretrained(hf, adapter).merge_and_unload().to(self.dtype)
        self.model = hf.to(self.device).eval()

    def generate(self, images: list, prompts: list[str], *, max_new_tokens: int, **options) -> list[Generation]:
        if options.get("do_sample"):
            raise ValueError("the transformers backend decodes greedily only")
        size = options.get("batch_size") or len(images)
        out: list[Generation] = []
        for start in range(0, len(images), size):  # transformers' generate pads a batch to its longest answer
            out += self._generate(images[start : start + size], prompts[start : start + size], max_new_tokens)
        return out

    def _generate(self, images: list, prompts: list[str], max_new_tokens: int) -> list[Generation]:
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
