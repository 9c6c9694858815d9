"""The GPU suite: parity and speed of the released 3B sizes in one command, nothing downloaded.

    python -m benchmarks.gpu [--out gpu_results]       # a CUDA machine: about 8 minutes on one H100/H200
    python -m benchmarks.gpu --smoke [--out DIR]        # the same code on tiny configs, on the CPU (a unit test)

Random weights at full size are built in memory on the device (transformers' PaliGemma, then ours on the very same
tensors), so nothing is read from a hub or a disk and both sides compute with identical weights. It never imports
Ray (the GPU machines offered for this work have none). It writes `gpu.json` (every figure) and `gpu.md` (the
markdown rows of docs/PERFORMANCE.md) to --out:

- **parity** in bfloat16, PaliGemma 1 and 2 3B: the relative difference of our last-position logits from
  transformers' on 8 prompts of different lengths (left-padded for transformers, as its generate does), and how
  many of 8 rows give the same greedy tokens for 32 steps;
- **speed**, fixed work (`caption en`, 32 new tokens, end-of-sequence ignored): ours eager, ours compiled (CUDA
  graphs), transformers' `generate`, at 224 and 448 px, batch 32 and 64: images/s, tokens/s, ms per decode step
  (the time of 32 tokens less that of 1, over 31), the floor of that step (text weights read once at the device's
  copy bandwidth), peak memory, compile seconds apart;
- **prefill** of PaliGemma 2 at 896 px (4,096 image tokens), batch 8: time and peak memory, ours and
  transformers';
- **labeling**: the answers -> rows core (`labeling.answers.label_batch`) on 64 images with `segment`, masks
  through the VQ-VAE on the device. Random weights do not write `<seg>` codes, so the model's answers are fixed
  segment answers here (4 objects each): this times parsing, scores and mask decoding, not generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.common import device_name, hf_generate, median_seconds, prompt_tokenizer, randomize_, sample_images
from model import ImageProcessor, PaliGemma, PaliGemmaConfig
from model.generation import Generation
from model.loading import our_key
from model.runner import Runner
from model.sizes import SIZES

PROMPTS = ("caption en", "detect cat ; dog", "ocr", "answer en what is in the picture on the left side")


@dataclass(frozen=True)
class Suite:
    """What one run measures. `speed` lists (size, image size, batches); `prefill` is (size, image size, batch)."""

    name: str
    device: str
    dtype: torch.dtype
    parity_sizes: tuple[str, ...]
    parity_rows: int
    parity_steps: int
    speed: tuple[tuple[str, int, tuple[int, ...]], ...]
    new_tokens: int
    repeats: int
    compiled_cases: int  # how many (size, image size) speed cases also run the compiled step
    prefill: tuple[str, int, int]
    labeling_images: int


FULL = Suite(
    name="gpu", device="cuda", dtype=torch.bfloat16, parity_sizes=("pg1-3b", "pg2-3b"), parity_rows=8,
    parity_steps=32, speed=(("pg1-3b", 224, (32, 64)), ("pg1-3b", 448, (32, 64)), ("pg2-3b", 224, (64,))),
    new_tokens=32, repeats=3, compiled_cases=2, prefill=("pg2-3b", 896, 8), labeling_images=64,
)  # fmt: skip
# The same code on the CPU in seconds: tiny (PaliGemma 1 layout) and tiny2 (Gemma 2), 56 px and twice that.
SMOKE = Suite(
    name="smoke", device="cpu", dtype=torch.bfloat16, parity_sizes=("tiny", "tiny2"), parity_rows=4,
    parity_steps=6, speed=(("tiny", 56, (2,)), ("tiny2", 112, (2,))), new_tokens=4, repeats=1, compiled_cases=1,
    prefill=("tiny2", 112, 2), labeling_images=4,
)  # fmt: skip


@dataclass(frozen=True)
class ParityRow:
    """Ours against transformers on the same weights."""

    size: str
    image_size: int
    dtype: str
    logits_relative_difference: float
    rows: int
    steps: int
    rows_with_same_tokens: int


@dataclass(frozen=True)
class SpeedRow:
    """One engine on the fixed workload."""

    size: str
    image_size: int
    engine: str
    batch: int
    images_per_s: float
    tokens_per_s: float
    step_ms: float
    step_floor_ms: float
    peak_memory_mib: float | None
    compile_s: float | None


@dataclass(frozen=True)
class PrefillRow:
    """Prefill (vision tower included) of one batch, generating a single token."""

    size: str
    image_size: int
    engine: str
    batch: int
    seconds: float
    peak_memory_mib: float | None


@dataclass(frozen=True)
class LabelingRow:
    """label_batch on fixed segment answers, masks decoded on the device."""

    images: int
    objects: int
    masks: int
    seconds: float
    images_per_s: float


def config_at(size: str, image_size: int) -> PaliGemmaConfig:
    """A named size at another resolution (the same network with more image tokens)."""
    config = SIZES[size]
    return dataclasses.replace(config, vision=dataclasses.replace(config.vision, image_size=image_size))


def build_pair(config: PaliGemmaConfig, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """transformers' PaliGemma with random weights on the device, and ours on the very same tensors."""
    from transformers import PaliGemmaConfig as HFConfig
    from transformers import PaliGemmaForConditionalGeneration

    with torch.device(device):
        hf = PaliGemmaForConditionalGeneration(HFConfig.from_dict(config.to_hf_dict()))
    randomize_(hf, seed)
    hf = hf.to(dtype).eval()
    hf.generation_config.eos_token_id = None  # fixed work: every row runs its whole budget
    state = {}
    for key, tensor in hf.state_dict().items():
        ours = our_key(key)
        if ours is not None and not (ours == "lm_head.weight" and config.tie_word_embeddings):
            state[ours] = tensor
    with torch.device("meta"):
        model = PaliGemma(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tokenizer = prompt_tokenizer(config)
    model.image_processor = ImageProcessor(size=config.vision.image_size)
    return model.eval(), hf


def peak_mib(device: torch.device) -> float | None:
    """Peak memory allocated on a GPU since the last reset, in MiB; None on a CPU (no allocator statistics)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory measurement (GPU only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device) -> None:
    """Give the last case's memory back before the next builds its models."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parity(suite: Suite, size: str, device: torch.device) -> ParityRow:
    """Last-position logits and greedy tokens, ours against transformers', on prompts of different lengths."""
    config = SIZES[size]
    ours, hf = build_pair(config, suite.dtype, device)
    n = suite.parity_rows
    images, prompts = sample_images(n), [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    ids, mask = ours.tokenizer.batch(prompts, config.num_image_tokens)
    pixels = ours.image_processor(images).to(device, suite.dtype)
    with torch.inference_mode():
        theirs = hf(input_ids=ids.to(device), attention_mask=mask.long().to(device), pixel_values=pixels,
                    token_type_ids=torch.zeros_like(ids).to(device)).logits[:, -1].float()  # fmt: skip
        mine = ours(ids, pixels, attention_mask=mask)[:, -1].float()
    relative = float((mine - theirs).norm() / theirs.norm())
    gens = ours.generate(images, prompts, max_new_tokens=suite.parity_steps, stop_at_eos=False, return_logprobs=True)
    want = hf_generate(hf, ours, images, prompts, suite.parity_steps, stop_at_eos=False)
    same = sum(g.token_ids == w for g, w in zip(gens, want, strict=True))
    dtype = str(suite.dtype).removeprefix("torch.")
    return ParityRow(size, config.vision.image_size, dtype, round(relative, 5), n, suite.parity_steps, same)


def step_floor_ms(model: PaliGemma, device: torch.device) -> float:
    """The decode step's floor: the text decoder's weights read once at this device's copy bandwidth."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    seconds = median_seconds(lambda: y.copy_(x), device, 5)
    bandwidth = 2 * x.numel() / seconds  # a copy reads and writes every byte
    weights = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    return 1e3 * weights / bandwidth


def time_engine(run, device: torch.device, repeats: int, new_tokens: int) -> tuple[float, float, float, float]:
    """(first call s, seconds of the whole work, seconds per decode step, peak MiB) of run(max_new_tokens)."""
    start = time.perf_counter()
    run(new_tokens)  # warm-up: kernels loaded, graphs compiled and captured
    first = time.perf_counter() - start
    one = median_seconds(lambda: run(1), device, repeats, warmup=1)
    reset_peak(device)
    full = median_seconds(lambda: run(new_tokens), device, repeats, warmup=0)
    peak = peak_mib(device)
    return first, full, (full - one) / max(1, new_tokens - 1), peak if peak is not None else float("nan")


def speed(suite: Suite, size: str, image_size: int, batches: tuple[int, ...], compiled: bool, device: torch.device):
    """Ours eager, ours compiled (when asked) and transformers on the fixed workload, at each batch."""
    ours, hf = build_pair(config_at(size, image_size), suite.dtype, device)
    floor = step_floor_ms(ours, device)
    rows = []
    for batch in batches:
        images, prompts = sample_images(batch), ["caption en"] * batch
        engines = {"ours eager": Runner(ours, compile=False, measure=False)}
        if compiled:
            engines["ours compiled"] = Runner(ours, compile=True, measure=False)
        runs = {name: _ours_run(ours, runner, images, prompts) for name, runner in engines.items()}
        runs["transformers"] = lambda n, images=images, prompts=prompts: hf_generate(hf, ours, images, prompts, n,
                                                                                      False)  # fmt: skip
        for name, run in runs.items():
            first, full, step, peak = time_engine(run, device, suite.repeats, suite.new_tokens)
            compile_s = round(first - full, 1) if name == "ours compiled" else None
            rows.append(SpeedRow(size, image_size, name, batch, round(batch / full, 2),
                                 round(batch * suite.new_tokens / full, 1), round(1e3 * step, 2), round(floor, 2),
                                 None if peak != peak else round(peak, 1), compile_s))  # fmt: skip
    return rows


def _ours_run(ours: PaliGemma, runner: Runner, images, prompts):
    def run(new_tokens: int) -> list[Generation]:
        ours.runner = runner  # the engine under test: a declared attribute, swapped between engines
        return ours.generate(images, prompts, max_new_tokens=new_tokens, stop_at_eos=False, return_logprobs=True)

    return run


def prefill(suite: Suite, device: torch.device) -> list[PrefillRow]:
    """One-token generation (vision tower and prefill) of the suite's large-image batch, ours and transformers'."""
    size, image_size, batch = suite.prefill
    ours, hf = build_pair(config_at(size, image_size), suite.dtype, device)
    images, prompts = sample_images(batch), ["caption en"] * batch
    runs = {
        "ours": lambda: ours.generate(images, prompts, max_new_tokens=1),
        "transformers": lambda: hf_generate(hf, ours, images, prompts, 1, False),
    }
    rows = []
    for name, run in runs.items():
        reset_peak(device)
        try:
            seconds = median_seconds(run, device, suite.repeats, warmup=1)
        except torch.OutOfMemoryError:
            seconds = float("nan")
        rows.append(PrefillRow(size, image_size, name, batch, round(seconds, 3), peak_mib(device)))
    return rows


class FixedSegmentAnswers:
    """A stand-in model whose every answer is the same four segmented objects (what label_batch then reads)."""

    def __init__(self, objects: int = 4):
        pieces = []
        for k in range(objects):
            box = [f"<loc{100 * k + v:04d}>" for v in (10, 20, 300, 400)]
            pieces += box + [f"<seg{(7 * k + j) % 128:03d}>" for j in range(16)] + [" cat"]
            pieces += [" ;"] if k < objects - 1 else []
        self.generation = Generation("".join(pieces), list(range(len(pieces))), pieces, [-0.1] * len(pieces), True)

    def generate(self, images, prompts, **options) -> list[Generation]:
        """The fixed answer for every image, streamed through on_result as our generate does."""
        out = [self.generation for _ in images]
        on_result = options.get("on_result")
        for i, gen in enumerate(out if on_result is not None else []):
            on_result(i, gen)
        return out


def labeling(suite: Suite, device: torch.device) -> LabelingRow:
    """label_batch with `segment` on fixed answers, masks through a random VQ-VAE on the device."""
    from decoders import MaskDecoder
    from labeling.answers import label_batch
    from tasks import get_task
    from testing.vae import write_random_vae_npz

    with tempfile.TemporaryDirectory() as tmp:
        decoder = MaskDecoder.from_npz(write_random_vae_npz(Path(tmp) / "vae.npz"), device=device)
    n = suite.labeling_images
    images, tasks = sample_images(n), [get_task("segment", classes=["cat"])] * n
    model = FixedSegmentAnswers()
    out: list = []
    seconds = median_seconds(lambda: out.append(label_batch(model, tasks, images, mask_decoder=decoder)), device,
                             suite.repeats)  # fmt: skip
    last = out[-1]
    objects = sum(len(item.row["objects"]) for item in last)
    masks = sum(o.get("mask") is not None for item in last for o in item.row["objects"])
    return LabelingRow(n, objects, masks, round(seconds, 3), round(n / seconds, 1))


def _or_blank(value) -> str:
    return "" if value is None else str(value)


def markdown(device: str, results: dict) -> str:
    """The rows of docs/PERFORMANCE.md's GPU section."""
    lines = [f"Device: {device}", "", "| model | px | dtype | logits rel. diff | rows with same tokens |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in results["parity"]:
        lines.append(f"| {r['size']} | {r['image_size']} | {r['dtype']} | {r['logits_relative_difference']:.2e} | "
                     f"{r['rows_with_same_tokens']} of {r['rows']} ({r['steps']} steps) |")  # fmt: skip
    lines += ["", "| model | px | engine | batch | images/s | tokens/s | ms/step | floor ms | peak MiB | compile s |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["speed"]:
        lines.append(f"| {r['size']} | {r['image_size']} | {r['engine']} | {r['batch']} | {r['images_per_s']} | "
                     f"{r['tokens_per_s']} | {r['step_ms']} | {r['step_floor_ms']} | "
                     f"{_or_blank(r['peak_memory_mib'])} | {_or_blank(r['compile_s'])} |")  # fmt: skip
    lines += ["", "| prefill | px | engine | batch | seconds | peak MiB |", "|---|---|---|---|---|---|"]
    for r in results["prefill"]:
        lines.append(f"| {r['size']} | {r['image_size']} | {r['engine']} | {r['batch']} | {r['seconds']} | "
                     f"{_or_blank(r['peak_memory_mib'])} |")  # fmt: skip
    r = results["labeling"]
    lines += ["", f"Labeling core, `segment`: {r['images']} images, {r['masks']} masks, {r['images_per_s']} images/s"]
    return "\n".join(lines) + "\n"


def run_suite(suite: Suite) -> dict:
    """Every part of the suite, in order; returns the results as plain data."""
    device = torch.device(suite.device)
    results: dict = {"suite": suite.name, "device": device_name(device), "torch": torch.__version__}
    started = time.perf_counter()
    results["parity"] = []
    for size in suite.parity_sizes:
        results["parity"].append(asdict(parity(suite, size, device)))
        free_memory(device)
    results["speed"] = []
    for k, (size, image_size, batches) in enumerate(suite.speed):
        rows = speed(suite, size, image_size, batches, k < suite.compiled_cases, device)
        results["speed"] += [asdict(r) for r in rows]
        free_memory(device)
    results["prefill"] = [asdict(r) for r in prefill(suite, device)]
    results["labeling"] = asdict(labeling(suite, device))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or its smoke version), print the markdown and write gpu.json and gpu.md to --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny configs on the CPU: the same code in seconds")
    p.add_argument("--out", type=Path, default=Path("gpu_results"), help="folder for gpu.json and gpu.md")
    args = p.parse_args(argv)
    suite = SMOKE if args.smoke else FULL
    if suite.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; --smoke runs the suite on the CPU")
    torch.manual_seed(0)
    results = run_suite(suite)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results["device"], results)
    (args.out / "gpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
