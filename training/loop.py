"""The fine-tuning loop: prefix-LM loss on the answer only, three ways to choose what trains, Ray-ready.

`train(cfg)` runs on one process and is what a Ray Train worker calls (`train_worker`): the worker's rank picks
its share of the data, `ray.train.torch.prepare_model` adds gradient averaging when there are several workers,
and metrics go to `ray.train.report`. Rank 0 writes the checkpoints, each a complete Hugging Face folder that
`PaliGemma.from_pretrained` and transformers load alike.

A run can stop at any step and go on later (`train(cfg, resume=True)`, `jobs.finetune --resume RUN`): `last/`
holds, besides the checkpoint, `trainer_state.pt` with the float32 weights, the optimizer's state, the step and
the RNG state; the learning rate is a function of the step and the data stream a function of the example index
(training.data), so a resumed run computes exactly the steps the uninterrupted one would have. `last/` is
rewritten atomically every `save_every` steps and every `save_minutes` of wall clock.

Modes (what gets gradients):
- full: every weight.
- attention: only the text decoder's attention projections, the cheap recipe the PaliGemma fine-tuning guides
  suggest for small data; everything else stays as loaded.
- lora: low-rank adapters on the text decoder's attention and MLP projections, merged into the weights when saved.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.paligemma import PaliGemma
from model.saving import save_pretrained

from .data import IGNORE, Batch, BatchMaker, FileSource, ShapesSource
from .lora import add_lora, merged_state_dict

MODES = ("full", "attention", "lora")


@dataclass
class FinetuneConfig:
    """Everything a run depends on; saved next to the checkpoints as training_config.json."""

    output: str
    train: str = "shapes"  # a .jsonl / .parquet file, or "shapes" for the built-in generator
    model: str | None = None  # checkpoint folder to start from
    scratch: str | None = None  # or a named size (model/sizes.py) to start from random init
    mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    vision_lr_scale: float = 1.0  # the vision tower's learning rate, as a fraction of lr
    seed: int = 0  # initialization
    data_seed: int = 0  # the data stream (shapes generator or file order)
    vae: str | None = None  # vae.npz: the shapes' segmentation targets are encoded with it
    bf16: bool = False  # autocast matmuls to bfloat16 (weights and optimizer state stay float32)
    threads: int | None = None
    log_every: int = 50
    save_every: int = 0  # write last/ every N steps (0: by save_minutes only)
    save_minutes: float = 5.0  # ... and whenever this much wall clock passed since the last save
    save_dtype: str = "float32"
    max_minutes: float | None = None  # stop (saving last/ and final/) when this sitting's wall clock runs out
    task_mix: dict[str, float] = field(default_factory=dict)  # shapes only: one stage with this mix
    stages: list[dict] = field(default_factory=list)  # shapes only: a curriculum (training.shapes.Stage fields)
    pool: int = 1  # group the examples of this many batches by length (training.data.BatchMaker)
    data_workers: int = 0  # 1: draw and encode batches in a background process
    eval_every: int = 0  # label and score the held-out shapes set every N steps (and at the end); 0: never
    eval_scenes: int = 50
    eval_seed: int = 555  # the held-out set's seed; training streams never use default_rng(eval_seed)
    eval_max_new_tokens: int = 128
    compile: bool = False  # torch.compile the loss step (forward and backward)
    vision_pretrain: int = 0  # shapes only: dense-label examples for the vision tower first (training.vision_pretrain)
    vision_pretrain_lr: float = 1e-3
    vision_pretrain_words: float = 0.4  # share of word images among the pretraining images
    image_size: int | None = None  # train at this input resolution (position embeddings resized; training.resolution)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if (self.model is None) == (self.scratch is None):
            raise ValueError("give exactly one of model (a checkpoint folder) and scratch (a named size)")
        if self.steps < 1 or self.batch_size < 1 or self.pool < 1:
            raise ValueError("steps, batch_size and pool must be at least 1")
        if self.eval_every and self.train != "shapes":
            raise ValueError("evaluation while training uses the held-out shapes set: it needs --train shapes")
        if self.vision_pretrain and self.train != "shapes":
            raise ValueError("--vision-pretrain labels the shapes generator's images: it needs --train shapes")
        self.curriculum()  # a bad stage fails here, before any work

    def curriculum(self) -> tuple:
        from .shapes import Stage

        if self.stages:
            return tuple(Stage.from_dict(d) for d in self.stages)
        return (Stage(1, mix=dict(self.task_mix)),) if self.task_mix else ()


class AnswerLoss(nn.Module):
    """Wraps the network so that forward() returns the loss: DDP only averages gradients of forward's graph.

    Only answer positions are projected onto the vocabulary; the image and prompt positions, most of the
    sequence, never pay for the [tokens x vocabulary] product. The positions come as `answer_index` (flat indices
    into B x T, padded to a multiple of 64 with positions whose label is IGNORE, which cost nothing in the loss),
    so that every shape is known before the step runs: no host synchronization, and a step torch.compile can
    trace whole. Returns one loss per entry of answer_index (0 for the padding).
    """

    def __init__(self, model: PaliGemma):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, labels, pixel_values, answer_index) -> torch.Tensor:
        h = self.model.hidden_states(input_ids, pixel_values, attention_mask, token_type_ids, images_first=True)
        flat = h.reshape(-1, h.shape[-1]).index_select(0, answer_index)
        target = labels.reshape(-1).index_select(0, answer_index)
        logits = self.model.lm_logits(flat).float()
        return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")


def init_from_scratch(model: PaliGemma, seed: int) -> None:
    """Small-transformer initialization, plus location tokens that start out smooth in their coordinate.

    Matrices get N(0, 0.02) (residual output projections scaled down by depth, as GPT-2 does); embeddings
    N(0, 1/sqrt(width)) so Gemma's sqrt(width) input scale gives unit-size inputs. The 1024 `<loc>` embeddings start
    as sinusoids of their bin index: neighbouring bins then share most of their embedding, so the (tied) output
    layer starts with coordinates as a smooth function instead of 1024 unrelated classes, which a CPU-hour of
    data could not teach bin by bin (each bin is the target of only a few hundred tokens in such a run).
    """
    gen = torch.Generator().manual_seed(seed)
    text = model.config.text
    depth_scale = (2 * text.num_layers) ** -0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                p.normal_(0.0, text.hidden_size**-0.5, generator=gen)
            elif p.ndim >= 2:
                std = 0.02 * (
                    depth_scale
                    if name.endswith(("o_proj.weight", "down_proj.weight", "out_proj.weight", "fc2.weight"))
                    else 1.0
                )
                p.normal_(0.0, std, generator=gen)
            elif name.endswith("bias"):
                p.zero_()
            elif "layernorm" in name or name.endswith("norm.weight"):
                # Gemma's RMSNorm multiplies by (1 + w), SigLIP's LayerNorm by w.
                p.fill_(0.0 if name.startswith("language_model") else 1.0)
        tok = model.tokenizer
        if tok is not None:
            loc = model.language_model.embed_tokens.weight[tok.loc0_id : tok.loc0_id + 1024]
            index = torch.arange(1024, dtype=torch.float32)[:, None]
            width = loc.shape[1]
            freqs = torch.pi / 1024 * torch.logspace(0, math.log2(256), width // 2, base=2.0)[None]
            smooth = torch.cat([torch.sin(index * freqs), torch.cos(index * freqs)], dim=1)
            smooth = smooth / smooth.norm(dim=1, keepdim=True)
            loc.copy_(0.8 * smooth + 0.2 * loc)


def build_model(cfg: FinetuneConfig) -> PaliGemma:
    from .resolution import with_image_size

    if cfg.model is not None:
        model = PaliGemma.from_pretrained(cfg.model)
    else:
        from .recipes import scratch_model

        model = scratch_model(cfg.scratch)
        init_from_scratch(model, cfg.seed)
    return with_image_size(model, cfg.image_size) if cfg.image_size else model


def choose_trainable(model: PaliGemma, cfg: FinetuneConfig) -> list[str]:
    """Freeze or adapt the network for the mode; returns the names of the trained parameters."""
    if cfg.mode == "lora":
        model.requires_grad_(False)
        add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    elif cfg.mode == "attention":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("language_model.") and ".self_attn." in name)
    else:
        model.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def make_source(cfg: FinetuneConfig, rank: int, world: int):
    """The run's examples by index: the shapes generator or a dataset file (training.data)."""
    if cfg.train != "shapes":
        return FileSource(cfg.train, cfg.data_seed, rank, world)
    # Each worker draws its own stream: seeds (data_seed, rank) never overlap one another.
    seed = int(np.random.SeedSequence([cfg.data_seed, rank]).generate_state(1)[0])
    return ShapesSource(seed, cfg.vae, cfg.curriculum())


def make_batch_maker(
    cfg: FinetuneConfig, rank: int, world: int, tokenizer_json: str, processor, num_image_tokens: int
) -> BatchMaker:
    """Module-level (picklable through functools.partial) so that a background data process can call it."""
    from tokenizers import Tokenizer

    from model.tokenizer import PromptTokenizer

    tok = PromptTokenizer(Tokenizer.from_str(tokenizer_json))
    source = make_source(cfg, rank, world)
    return BatchMaker(source, tok, processor, num_image_tokens, cfg.batch_size, cfg.pool, cfg.data_seed)


class InlineBatches:
    """Batches made in the training process itself (data_workers 0)."""

    def __init__(self, maker: BatchMaker):
        self.maker = maker

    def get(self, step: int) -> Batch:
        return self.maker.batch(step)

    def close(self) -> None:
        pass


def _losses_by_task(token_losses: torch.Tensor, batch: Batch) -> dict[str, list[float]]:
    row = (batch.answer_index // batch.labels.shape[1]).cpu()
    out: dict[str, list[float]] = defaultdict(list)
    per_row = torch.zeros(len(batch.tasks)).index_add_(0, row, token_losses.detach().float().cpu())
    counts = (batch.labels != IGNORE).sum(1).clamp(min=1).cpu()
    for task, value in zip(batch.tasks, (per_row / counts).tolist(), strict=True):
        out[task or "all"].append(value)
    return out


def save_checkpoint(
    model: PaliGemma, folder: Path, cfg: FinetuneConfig, extra: dict, state: dict | None = None
) -> None:
    """Write a complete checkpoint folder atomically (a temporary folder renamed into place); `state` (weights in
    float32, optimizer, step, RNG) goes into trainer_state.pt for --resume."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    weights = merged_state_dict(model) if cfg.mode == "lora" else None
    save_pretrained(model, tmp, dtype=cfg.save_dtype, state_dict=weights)
    (tmp / "training.json").write_text(json.dumps({"config": asdict(cfg)} | extra, indent=2) + "\n")
    if cfg.vae and Path(cfg.vae).is_file():  # segmentation answers need it to become masks: keep them together
        shutil.copyfile(cfg.vae, tmp / "vae.npz")
    if state is not None:
        torch.save(state, tmp / TRAINER_STATE)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


TRAINER_STATE = "trainer_state.pt"


def load_trainer_state(out: Path) -> dict:
    """The state a resumed run starts from (last/, or last.old/ when a save was cut short between renames)."""
    for name in ("last", "last.old"):
        path = out / name / TRAINER_STATE
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values: no pickle
    raise FileNotFoundError(f"{out}: no last/{TRAINER_STATE} to resume from (was the run saved at least once?)")


def train(
    cfg: FinetuneConfig,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    report: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
    resume: bool = False,
) -> dict:
    """Run the configured fine-tune; returns the last metrics. `wrap` adds DDP, `report` forwards metrics;
    `resume` continues from cfg.output/last."""
    with torch.enable_grad():  # whatever the caller's grad mode (a UI or a notebook may have turned it off)
        return Trainer(cfg, rank, world, device, wrap, report, log).run(resume)


class Trainer:
    """One run: the model, its optimizer and data, and the bookkeeping of logs, evaluations and saves."""

    def __init__(self, cfg, rank, world, device, wrap, report, log):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.report, self.log = report, log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + rank)
        self.model = build_model(cfg)
        trainable = choose_trainable(self.model, cfg)
        self.model.to(device).train()
        self.step_fn: nn.Module = AnswerLoss(self.model)
        if wrap is not None:
            self.step_fn = wrap(self.step_fn)
        if cfg.compile:
            # One graph for every batch shape (dynamic sizes): batches differ in length from step to step.
            self.step_fn = torch.compile(self.step_fn, dynamic=True)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        groups = []
        for vision in (False, True):
            for decay in (True, False):
                chosen = [p for n, p in named if n.startswith("vision_tower.") == vision and (p.ndim >= 2) == decay]
                if chosen:
                    groups.append({"params": chosen, "weight_decay": cfg.weight_decay if decay else 0.0,
                                   "lr_scale": cfg.vision_lr_scale if vision else 1.0})  # fmt: skip
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), fused=False)
        self.out = Path(cfg.output)
        self.main = rank == 0
        n_trainable = sum(p.numel() for p in self.params)
        n_total = sum(p.numel() for p in self.model.parameters())
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            log(f"mode {cfg.mode}: training {n_trainable:,} of {n_total:,} parameters ({len(trainable)} tensors)")
        self.elapsed_before = 0.0  # wall-clock seconds of earlier sittings
        self.mask_decoder = None

    # ---- resume ------------------------------------------------------------------------------------------------

    def restore(self) -> int:
        state = load_trainer_state(self.out)
        saved = FinetuneConfig(**state["config"])
        if asdict(saved) | {"max_minutes": None} != asdict(self.cfg) | {"max_minutes": None}:
            changed = sorted(k for k, v in asdict(self.cfg).items() if asdict(saved).get(k) != v and k != "max_minutes")
            raise ValueError(f"{self.out}: the run was started with other settings ({', '.join(changed)})")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.elapsed_before = state["elapsed"]
        step = int(state["step"])
        log_path = self.out / "log.jsonl"
        if self.main and log_path.is_file():  # lines logged after the save are logged again by this sitting
            kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            log_path.write_text("".join(line + "\n" for line in kept))
        if self.main:
            self.log(f"resumed {self.out} at step {step} of {self.cfg.steps}")
        return step

    def state(self, step: int, elapsed: float) -> dict:
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": torch.get_rng_state(),
            "elapsed": elapsed,
            "config": asdict(self.cfg),
        }

    # ---- the loop ----------------------------------------------------------------------------------------------

    def batches(self, start: int):
        cfg = self.cfg
        factory = functools.partial(
            make_batch_maker,
            cfg,
            self.rank,
            self.world,
            self.model.tokenizer.tok.to_str(),
            self.model.image_processor,
            self.model.config.num_image_tokens,
        )
        if cfg.data_workers:
            from .prefetch import Prefetcher

            return Prefetcher(factory, start)
        return InlineBatches(factory())

    def run(self, resume: bool) -> dict:
        cfg, out = self.cfg, self.out
        start_step = self.restore() if resume else 0
        if self.main and not resume:
            (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
            (out / "log.jsonl").write_text("")
        if cfg.vision_pretrain and not resume:  # a resumed run's tower is in its saved state already
            self.pretrain_vision()
            if self.main:  # a run stopped from here on resumes without pretraining again
                save_checkpoint(self.model, out / "last", cfg, {"step": 0}, self.state(0, 0.0))
        data = self.batches(start_step)
        window: dict[str, list[float]] = defaultdict(list)
        metrics: dict = {}
        log_file = (out / "log.jsonl").open("a") if self.main else None
        start = time.perf_counter()
        last_save = start
        step = start_step
        stopped_early = False
        try:
            for step in range(start_step, cfg.steps):
                batch = data.get(step).to(self.device)
                loss, token_losses, grad_norm = self.train_step(batch, step)
                for task, values in _losses_by_task(token_losses, batch).items():
                    window[task].extend(values)
                window["loss"].append(loss)
                elapsed = self.elapsed_before + time.perf_counter() - start
                sitting = (time.perf_counter() - start) / 60
                stopped_early = cfg.max_minutes is not None and sitting > cfg.max_minutes and step < cfg.steps - 1
                done = step == cfg.steps - 1 or stopped_early
                examples = (step + 1) * cfg.batch_size * self.world
                if (step + 1) % cfg.log_every == 0 or done:
                    metrics = {
                        "step": step + 1,
                        "loss": float(np.mean(window.pop("loss"))),
                        **{f"loss/{t}": float(np.mean(v)) for t, v in sorted(window.items())},
                        "lr": lr_at(step, cfg),
                        "grad_norm": grad_norm,
                        "examples": examples,
                        "examples_per_s": (step + 1 - start_step)
                        * cfg.batch_size
                        * self.world
                        / (time.perf_counter() - start),
                        "minutes": elapsed / 60,
                    }
                    window.clear()
                    self.write_log(log_file, metrics)
                    if self.report is not None:
                        self.report(metrics)
                if cfg.eval_every and self.main and ((step + 1) % cfg.eval_every == 0 or done):
                    self.evaluate(step + 1, examples, log_file)
                due = (cfg.save_every and (step + 1) % cfg.save_every == 0) or (
                    time.perf_counter() - last_save > cfg.save_minutes * 60
                )
                if self.main and (due or stopped_early) and step < cfg.steps - 1:
                    save_checkpoint(self.model, out / "last", cfg, {"step": step + 1, "metrics": metrics},
                                    self.state(step + 1, elapsed))  # fmt: skip
                    last_save = time.perf_counter()
                if done:
                    break
        finally:
            data.close()
        if self.main:
            save_checkpoint(self.model, out / "final", cfg, {"step": step + 1, "metrics": metrics})
            log_file.close()
            if cfg.eval_every:
                from .curves import plot_curves

                plot_curves(out / "log.jsonl", out / "curves.png", title=out.name)
            if stopped_early:
                self.log(f"stopped at step {step + 1} of {cfg.steps} (--max-minutes); continue with --resume {out}")
            self.log(f"wrote {out / 'final'}")
        return metrics

    def pretrain_vision(self) -> None:
        from .vision_pretrain import pretrain_tower

        cfg = self.cfg
        with (self.out / "log.jsonl").open("a") as log_file:
            result = pretrain_tower(
                self.model, cfg.vision_pretrain, seed=int(np.random.SeedSequence([cfg.data_seed, self.rank, 7])
                                                          .generate_state(1)[0]),
                lr=cfg.vision_pretrain_lr, log=lambda record: self.write_log(log_file, {"step": 0} | record),
                word_share=cfg.vision_pretrain_words, bf16=cfg.bf16,
            )  # fmt: skip
            if self.main:
                self.log(f"vision tower pretrained: {result.get('vision_accuracy')}")
                log_file.write(json.dumps({"step": 0, "vision_accuracy": result.get("vision_accuracy")}) + "\n")
        self.model.train()

    def train_step(self, batch: Batch, step: int) -> tuple[float, torch.Tensor, float]:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, cfg) * group["lr_scale"]
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            token_losses = self.step_fn(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels,
                                        batch.pixel_values, batch.answer_index)  # fmt: skip
        loss = token_losses.sum() / batch.answer_tokens
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        return loss.item(), token_losses, float(grad_norm)

    def write_log(self, log_file, record: dict) -> None:
        if not self.main:
            return
        self.log(" ".join(_fmt(k, v) for k, v in record.items() if not isinstance(v, dict)))
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    def evaluate(self, step: int, examples: int, log_file) -> None:
        from .evaluate import ensure_eval_set, eval_summary, evaluate_shapes

        cfg = self.cfg
        if self.mask_decoder is None and cfg.vae:
            from decoders import MaskDecoder

            self.mask_decoder = MaskDecoder.from_npz(cfg.vae)
        folder = ensure_eval_set(self.out / "eval-data", cfg.eval_scenes, cfg.eval_seed)
        started = time.perf_counter()
        result = evaluate_shapes(self.model, folder, self.mask_decoder, max_new_tokens=cfg.eval_max_new_tokens)
        summary = eval_summary(result)
        record = {"step": step, "examples": examples, "eval": summary, "eval_seconds": time.perf_counter() - started}
        self.log(f"eval step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in summary.items()))
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        from .curves import plot_curves

        plot_curves(self.out / "log.jsonl", self.out / "curves.png", title=self.out.name)


def _fmt(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


def train_worker(config: dict) -> None:
    """The Ray Train entry point: one call per worker, with this worker's rank, device and reporting."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    config = dict(config)
    resume = config.pop("_resume", False)
    cfg = FinetuneConfig(**config)
    world = ctx.get_world_size()
    wrap = ray.train.torch.prepare_model if world > 1 else None
    train(
        cfg,
        rank=ctx.get_world_rank(),
        world=world,
        device=ray.train.torch.get_device(),
        wrap=wrap,
        report=lambda m: ray.train.report(m),
        resume=resume,
    )
