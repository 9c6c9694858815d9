"""The fine-tuning loop: prefix-LM loss on the answer only, three ways to choose what trains, Ray-ready.

`train(cfg)` runs on one process and is what a Ray Train worker calls (`train_worker`): the worker's rank picks
its share of the data, `ray.train.torch.prepare_model` adds gradient averaging when there are several workers,
and metrics go to `ray.train.report`. Rank 0 writes the checkpoints, each a complete Hugging Face folder that
`PaliGemma.from_pretrained` and transformers load alike.

Modes (what gets gradients):
- full: every weight.
- attention: only the text decoder's attention projections, the cheap recipe the PaliGemma fine-tuning guides
  suggest for small data; everything else stays as loaded.
- lora: low-rank adapters on the text decoder's attention and MLP projections, merged into the weights when saved.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.paligemma import PaliGemma
from model.saving import save_pretrained

from .data import IGNORE, Batch, Record, collate, file_stream
from .lora import add_lora, merged_state_dict

MODES = ("full", "attention", "lora")


@dataclass
class FinetuneConfig:
    """Everything a run depends on; saved next to the checkpoints as training_config.json."""

    output: str
    train: str = "shapes"  # a .jsonl / .parquet file, or "shapes" for the built-in generator
    model: str | None = None  # checkpoint folder to start from
    scratch: str | None = None  # or a named size (model.config.SIZES / training.recipes) to start from random init
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
    seed: int = 0  # initialization and dropout-free training order
    data_seed: int = 0
    vae: str | None = None  # vae.npz: the shapes' segmentation targets are encoded with it
    bf16: bool = False  # autocast matmuls to bfloat16 (weights and optimizer state stay float32)
    threads: int | None = None
    log_every: int = 50
    save_every: int = 0  # 0: only at the end
    save_dtype: str = "float32"
    max_minutes: float | None = None  # stop early (and save) when the wall clock runs out
    task_mix: dict[str, float] = field(default_factory=dict)  # shapes only; empty means the default mix
    curriculum: list[int] = field(default_factory=list)  # shapes only: see training.shapes.example_stream
    first_tasks: list[str] = field(default_factory=list)  # shapes only: the curriculum's first-stage tasks

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if (self.model is None) == (self.scratch is None):
            raise ValueError("give exactly one of model (a checkpoint folder) and scratch (a named size)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")


class AnswerLoss(nn.Module):
    """Wraps the network so that forward() returns the loss: DDP only averages gradients of forward's graph.

    Only answer positions are projected onto the vocabulary; the image and prompt positions, most of the
    sequence, never pay for the [tokens x vocabulary] product.
    """

    def __init__(self, model: PaliGemma):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, labels, pixel_values) -> torch.Tensor:
        h = self.model.hidden_states(input_ids, pixel_values, attention_mask, token_type_ids)
        where = labels != IGNORE
        logits = self.model.lm_logits(h[where]).float()
        return F.cross_entropy(logits, labels[where], reduction="none")  # one loss per answer token


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
    if cfg.model is not None:
        return PaliGemma.from_pretrained(cfg.model)
    from .recipes import scratch_model

    model = scratch_model(cfg.scratch)
    init_from_scratch(model, cfg.seed)
    return model


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


def record_stream(cfg: FinetuneConfig, rank: int, world: int) -> Iterator[Record]:
    if cfg.train != "shapes":
        return file_stream(cfg.train, cfg.data_seed, rank, world)
    from decoders.vqvae import MaskEncoder

    from .shapes import example_stream

    encoder = MaskEncoder.from_npz(cfg.vae) if cfg.vae else None
    mix = cfg.task_mix or None
    # Each worker draws its own stream: seeds (data_seed, rank) never overlap one another.
    seed = np.random.SeedSequence([cfg.data_seed, rank]).generate_state(1)[0]
    stream = example_stream(seed, encoder, mix, tuple(cfg.curriculum), tuple(cfg.first_tasks))
    return (Record(e.image, e.prefix, e.suffix, e.task) for e in stream)


def batches(cfg: FinetuneConfig, model: PaliGemma, rank: int, world: int) -> Iterator[Batch]:
    records = record_stream(cfg, rank, world)
    n_image = model.config.num_image_tokens
    while True:
        chunk = [next(records) for _ in range(cfg.batch_size)]
        yield collate(chunk, model.tokenizer, model.image_processor, n_image)


def _losses_by_task(token_losses: torch.Tensor, batch: Batch) -> dict[str, list[float]]:
    where = batch.labels != IGNORE
    row = torch.nonzero(where)[:, 0].cpu()
    out: dict[str, list[float]] = defaultdict(list)
    per_row = torch.zeros(len(batch.tasks)).index_add_(0, row, token_losses.detach().float().cpu())
    counts = where.sum(1).clamp(min=1).cpu()
    for task, value in zip(batch.tasks, (per_row / counts).tolist(), strict=True):
        out[task or "all"].append(value)
    return out


def save_checkpoint(model: PaliGemma, folder: Path, cfg: FinetuneConfig, extra: dict) -> None:
    """Write a complete checkpoint folder atomically (a temporary folder renamed into place)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    state = merged_state_dict(model) if cfg.mode == "lora" else None
    save_pretrained(model, tmp, dtype=cfg.save_dtype, state_dict=state)
    (tmp / "training.json").write_text(json.dumps({"config": asdict(cfg)} | extra, indent=2) + "\n")
    if cfg.vae and Path(cfg.vae).is_file():  # segmentation answers need it to become masks: keep them together
        shutil.copyfile(cfg.vae, tmp / "vae.npz")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def train(
    cfg: FinetuneConfig,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    report: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the configured fine-tune; returns the last metrics. `wrap` adds DDP, `report` forwards metrics."""
    with torch.enable_grad():  # whatever the caller's grad mode (a UI or a notebook may have turned it off)
        return _train(cfg, rank, world, device, wrap, report, log)


def _train(cfg, rank, world, device, wrap, report, log) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    model = build_model(cfg)
    trainable = choose_trainable(model, cfg)
    model.to(device).train()
    step_fn = AnswerLoss(model)
    if wrap is not None:
        step_fn = wrap(step_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        fused=False,
    )
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    out = Path(cfg.output)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        log(f"mode {cfg.mode}: training {n_trainable:,} of {n_total:,} parameters ({len(trainable)} tensors)")
    data = batches(cfg, model, rank, world)
    start = time.perf_counter()
    window: dict[str, list[float]] = defaultdict(list)
    seen, metrics = 0, {}
    log_file = (out / "log.jsonl").open("a") if rank == 0 else None
    step = 0
    for step in range(cfg.steps):
        batch = next(data).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            token_losses = step_fn(
                batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels, batch.pixel_values
            )
        loss = token_losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        seen += len(batch.tasks)
        for task, values in _losses_by_task(token_losses, batch).items():
            window[task].extend(values)
        window["loss"].append(loss.item())
        elapsed = time.perf_counter() - start
        last = step == cfg.steps - 1 or (cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60)
        if (step + 1) % cfg.log_every == 0 or last:
            metrics = {
                "step": step + 1,
                "loss": float(np.mean(window.pop("loss"))),
                **{f"loss/{t}": float(np.mean(v)) for t, v in sorted(window.items())},
                "lr": lr_at(step, cfg),
                "grad_norm": float(grad_norm),
                "examples": seen * world,
                "examples_per_s": seen * world / elapsed,
                "minutes": elapsed / 60,
            }
            window.clear()
            if rank == 0:
                log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
                log_file.write(json.dumps(metrics) + "\n")
                log_file.flush()
            if report is not None:
                report(metrics)
        if rank == 0 and cfg.save_every and (step + 1) % cfg.save_every == 0 and not last:
            save_checkpoint(model, out / "last", cfg, {"step": step + 1, "metrics": metrics})
        if last:
            break
    if rank == 0:
        save_checkpoint(model, out / "final", cfg, {"step": step + 1, "metrics": metrics})
        log_file.close()
        log(f"wrote {out / 'final'}")
    return metrics


def train_worker(config: dict) -> None:
    """The Ray Train entry point: one call per worker, with this worker's rank, device and reporting."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
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
    )
