"""The fine-tuning loop: prefix-LM loss on the answer only, four ways to choose what trains, Ray-ready.

`train(cfg)` runs on one process and is what a Ray Train worker calls (`train_worker`): the worker's rank picks
its share of the data, `ray.train.torch.prepare_model` adds gradient averaging when there are several workers,
and metrics go to `ray.train.report`. Rank 0 writes the checkpoints: complete Hugging Face folders that
`PaliGemma.from_pretrained` and transformers load alike, or, for LoRA, peft adapter folders (model/adapters.py).

A run can stop at any step and go on later (`train(cfg, resume=True)`, `jobs.finetune --resume RUN`): `last/`
holds, besides the checkpoint, `trainer_state.pt` with the float32 weights, the optimizer's state, the step, the
RNG state and the best validation score so far; the learning rate is a function of the step and the data stream
a function of the example index (training.data), so a resumed run computes exactly the steps the uninterrupted
one would have. `last/` is rewritten atomically every `save_every` steps and every `save_minutes` of wall clock.

Validation (`--val`, training/validate.py): every `eval_every` steps, at the end, and once before the first step
(the starting point of the curve), the validation records are labeled and scored; `best/` holds the weights of
the evaluation with the best `best_metric`, and `patience` evaluations without a better one end the run.

The schedule for a time budget (`max_minutes` without `steps`): the first `warmup` steps' learning rate does not
depend on the run's length, so the run times its first steps (min(warmup, 10); the first is left out, it pays
for allocations) and the baseline evaluation, then takes the most steps S for which S median step times plus the
S / eval_every + 1 evaluations still to come fit in 90 % of the minutes left (the rest for saves, and for a
shared machine's slower moments), and saves S in training_config.json (a resumed run keeps it). The budget
still ends the sitting if the machine slows down more than that.

Modes (what gets gradients):
- full: every weight.
- attention: only the text decoder's attention projections, the cheap recipe the PaliGemma fine-tuning guides
  suggest for small data; everything else stays as loaded.
- lora: peft's low-rank adapters on the text decoder's attention and MLP projections (training/lora.py).
- qlora: lora on a 4-bit base (bitsandbytes): CUDA only, refused on a CPU; not built yet.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.paligemma import PaliGemma
from model.saving import save_pretrained
from specs.fields import SpecError
from specs.finetune import MODES, FinetuneConfig

from .augment import Augment
from .data import IGNORE, Batch, BatchMaker, FileSource, ShapesSource

__all__ = ["MODES", "FinetuneConfig", "Trainer", "train", "train_worker"]
DEFAULT_STEPS = 1000  # without --steps and without --max-minutes
TRAINER_STATE = "trainer_state.pt"
QLORA_REFUSED = "--mode qlora needs a CUDA GPU (bitsandbytes 4-bit base weights); use --mode lora on a CPU"


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


def choose_trainable(model: PaliGemma, cfg: FinetuneConfig):
    """Freeze or adapt the network for the mode; returns the peft LoraConfig for lora (None otherwise)."""
    if cfg.mode == "qlora":  # a CPU never gets here (Trainer refuses it first)
        raise SpecError("--mode qlora (a bitsandbytes 4-bit base) is not built yet; use --mode lora")
    if cfg.mode == "lora":
        from .lora import add_lora

        return add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    if cfg.mode == "attention":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("language_model.") and ".self_attn." in name)
    else:
        model.requires_grad_(True)
    return None


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak at the last step (cfg.steps must be set)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def make_source(cfg: FinetuneConfig, rank: int, world: int):
    """The run's examples by index: the shapes generator or a dataset file (training.data)."""
    if cfg.train != "shapes":
        augment = Augment(cfg.hflip, cfg.scale_jitter, cfg.shuffle_objects)
        return FileSource(cfg.train, cfg.data_seed, rank, world, augment, cfg.vae)
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


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Put `tmp` in `folder`'s place: rename the old one aside first, so a crash leaves one of them whole."""
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    model: PaliGemma, folder: Path, cfg: FinetuneConfig, extra: dict, state: dict | None = None, adapter=None
) -> None:
    """Write a checkpoint folder atomically (a temporary folder renamed into place): a full Hugging Face
    checkpoint, or with `adapter` (a peft LoraConfig) the adapter alone in peft's format. `state` (weights in
    float32, optimizer, step, RNG) goes into trainer_state.pt for --resume."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if adapter is not None:
        from .lora import save_adapter

        save_adapter(model, adapter, tmp, base=cfg.model)
    else:
        save_pretrained(model, tmp, dtype=cfg.save_dtype)
    (tmp / "training.json").write_text(json.dumps({"config": cfg.to_dict()} | extra, indent=2) + "\n")
    if cfg.vae and Path(cfg.vae).is_file() and adapter is None:  # segment answers need it to become masks
        shutil.copyfile(cfg.vae, tmp / "vae.npz")
    if state is not None:
        torch.save(state, tmp / TRAINER_STATE)
    _replace_folder(tmp, folder)


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


def _fmt(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


class Trainer:
    """One run: the model, its optimizer and data, and the bookkeeping of logs, evaluations and saves."""

    def __init__(self, cfg, rank, world, device, wrap, report, log):
        if cfg.mode == "qlora" and torch.device(device).type != "cuda":
            raise SpecError(QLORA_REFUSED)
        if cfg.steps is None and cfg.max_minutes is None:
            cfg = dataclasses.replace(cfg, steps=DEFAULT_STEPS)
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.report, self.log = report, log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + rank)
        self.model = build_model(cfg)
        self.adapter = choose_trainable(self.model, cfg)
        self.model.to(device).train()
        self.step_fn: nn.Module = AnswerLoss(self.model)
        if wrap is not None:
            self.step_fn = wrap(self.step_fn)
        if cfg.compile:
            # One graph for every batch shape (dynamic sizes): batches differ in length from step to step.
            self.step_fn = torch.compile(self.step_fn, dynamic=True)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.opt = torch.optim.AdamW(self._param_groups(named), lr=cfg.lr, betas=(0.9, 0.98), fused=False)
        self.out = Path(cfg.output)
        self.main = rank == 0
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            n_trainable, n_total = sum(p.numel() for p in self.params), sum(p.numel() for p in self.model.parameters())
            log(f"mode {cfg.mode}: training {n_trainable:,} of {n_total:,} parameters ({len(named)} tensors)")
        self.elapsed_before = 0.0  # wall-clock seconds of earlier sittings
        self.mask_decoder = None
        self.val_set = None
        self.best: dict = {"value": None, "step": None, "stale": 0}  # best validation score so far
        self.eval_seconds: float | None = None

    def _param_groups(self, named) -> list[dict]:
        cfg = self.cfg
        groups = []
        for vision in (False, True):
            for decay in (True, False):
                chosen = [p for n, p in named if n.startswith("vision_tower.") == vision and (p.ndim >= 2) == decay]
                if chosen:
                    groups.append({"params": chosen, "weight_decay": cfg.weight_decay if decay else 0.0,
                                   "lr_scale": cfg.vision_lr_scale if vision else 1.0})  # fmt: skip
        return groups

    # ---- resume ------------------------------------------------------------------------------------------------

    def restore(self) -> int:
        state = load_trainer_state(self.out)
        saved = FinetuneConfig.from_dict(state["config"])
        mine = dataclasses.replace(self.cfg, max_minutes=None, threads=None)
        if dataclasses.replace(saved, max_minutes=None, threads=None) != mine:
            changed = sorted(k for k, v in mine.to_dict().items() if saved.to_dict().get(k) != v)
            raise SpecError(f"{self.out}: the run was started with other settings ({', '.join(changed)})")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.elapsed_before = state["elapsed"]
        self.best = dict(state.get("best") or self.best)
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
            "config": self.cfg.to_dict(),
            "best": dict(self.best),
        }

    def save(self, name: str, step: int, extra: dict, elapsed: float | None = None) -> None:
        state = self.state(step, elapsed) if elapsed is not None else None
        save_checkpoint(self.model, self.out / name, self.cfg, {"step": step} | extra, state, self.adapter)

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

    def begin(self, resume: bool, log_file) -> int:
        """The first step of this sitting: a restored one, or 0 after writing the run's config (and, for a new
        run, pretraining the vision tower and scoring the starting point)."""
        cfg, out = self.cfg, self.out
        if resume:
            return self.restore()
        if self.main:
            (out / "training_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if cfg.vision_pretrain:
            self.pretrain_vision(log_file)
            if self.main and cfg.steps is not None:  # a run stopped from here on resumes without pretraining again
                self.save("last", 0, {}, 0.0)
        if cfg.val and cfg.eval_every and self.main:
            self.evaluate(0, 0, log_file)
        return 0

    def fit_schedule(self, data, log_file, started: float) -> None:
        """Choose cfg.steps for max_minutes (see the module docstring), running the timed warm-up steps."""
        cfg = self.cfg
        probe = max(1, min(cfg.warmup, 10))
        times = []
        for step in range(probe):
            t = time.perf_counter()
            self.train_step(data.get(step).to(self.device), step)
            times.append(time.perf_counter() - t)
        per_step = float(np.median(times[1:] if len(times) > 1 else times))
        per_eval = (self.eval_seconds or 0.0) if cfg.eval_every else 0.0
        left = 0.9 * cfg.max_minutes * 60 - (time.perf_counter() - started)
        evals = per_eval / cfg.eval_every if cfg.eval_every else 0.0
        steps = max(probe + 1, probe + int((left - per_eval - probe * per_step) / (per_step + evals)))
        self.cfg = dataclasses.replace(cfg, steps=steps)
        self.probed = probe
        if self.main:
            (self.out / "training_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
            self.log(f"schedule: {steps} steps fit {cfg.max_minutes:g} minutes "
                     f"({per_step:.2f} s a step, {per_eval:.1f} s an evaluation)")  # fmt: skip

    def run(self, resume: bool) -> dict:
        out = self.out
        log_file = None
        if self.main:
            if not resume:
                (out / "log.jsonl").write_text("")
            log_file = (out / "log.jsonl").open("a")
        sitting = time.perf_counter()
        start_step = self.begin(resume, log_file)
        data = self.batches(start_step)
        self.probed = 0
        try:
            if self.cfg.steps is None:
                self.fit_schedule(data, log_file, sitting)
            step, metrics, stop = self.loop(data, start_step, log_file, sitting)
        finally:
            data.close()
        if self.main:
            self.finish(step, metrics, stop, log_file)
        return metrics

    def loop(self, data, start_step: int, log_file, sitting: float) -> tuple[int, dict, str | None]:
        """Steps start_step.. until the last, a stop (max_minutes, patience); returns (steps done, metrics, why)."""
        cfg = self.cfg
        window: dict[str, list[float]] = defaultdict(list)
        metrics: dict = {}
        start = last_save = time.perf_counter()
        step, stop = start_step, None
        for step in range(start_step, cfg.steps):
            if step >= self.probed:  # the schedule's timed steps ran already
                batch = data.get(step).to(self.device)
                loss, token_losses, grad_norm = self.train_step(batch, step)
                for task, values in _losses_by_task(token_losses, batch).items():
                    window[task].extend(values)
                window["loss"].append(loss)
            elapsed = self.elapsed_before + time.perf_counter() - start
            if cfg.max_minutes is not None and (time.perf_counter() - sitting) / 60 > cfg.max_minutes:
                stop = "max_minutes" if step < cfg.steps - 1 else None
            done = step == cfg.steps - 1 or stop is not None
            examples = (step + 1) * cfg.batch_size * self.world
            if ((step + 1) % cfg.log_every == 0 or done) and window.get("loss"):
                metrics = self.log_step(step, start_step, window, grad_norm, examples, elapsed, start, log_file)
            periodic = cfg.eval_every and (step + 1) % cfg.eval_every == 0
            due_eval = self.main and (cfg.eval_every or cfg.val) and (periodic or done)  # --val alone: at the end
            if due_eval and self.evaluate(step + 1, examples, log_file) and not done:
                stop, done = "patience", True
            due = (cfg.save_every and (step + 1) % cfg.save_every == 0) or (
                time.perf_counter() - last_save > cfg.save_minutes * 60
            )
            if self.main and (due or stop) and step < cfg.steps - 1:
                self.save("last", step + 1, {"metrics": metrics}, elapsed)
                last_save = time.perf_counter()
            if done:
                break
        return step + 1, metrics, stop

    def log_step(self, step, start_step, window, grad_norm, examples, elapsed, start, log_file) -> dict:
        cfg = self.cfg
        metrics = {
            "step": step + 1,
            "loss": float(np.mean(window.pop("loss"))),
            **{f"loss/{t}": float(np.mean(v)) for t, v in sorted(window.items())},
            "lr": lr_at(step, cfg),
            "grad_norm": grad_norm,
            "examples": examples,
            "examples_per_s": (step + 1 - start_step) * cfg.batch_size * self.world / (time.perf_counter() - start),
            "minutes": elapsed / 60,
        }
        window.clear()
        self.write_log(log_file, metrics)
        if self.report is not None:
            self.report(metrics)
        return metrics

    def finish(self, step: int, metrics: dict, stop: str | None, log_file) -> None:
        cfg, out = self.cfg, self.out
        self.save("final", step, {"metrics": metrics, "best": self.best})
        log_file.close()
        if cfg.eval_every or cfg.val:
            from .curves import plot_curves

            plot_curves(out / "log.jsonl", out / "curves.png", title=out.name)
        if stop == "max_minutes":
            self.log(f"stopped at step {step} of {cfg.steps} (--max-minutes); continue with --resume {out}")
        elif stop == "patience":
            self.log(f"stopped at step {step} of {cfg.steps}: {cfg.patience} evaluations without a better "
                     f"{self.best_metric}")  # fmt: skip
        if self.best["step"] is not None:
            self.log(f"best {self.best_metric} {self.best['value']:.4f} at step {self.best['step']}: {out / 'best'}")
        self.log(f"wrote {out / 'final'}")

    def pretrain_vision(self, log_file) -> None:
        from .vision_pretrain import pretrain_tower

        cfg = self.cfg
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
        lr = lr_at(step, cfg) if cfg.steps is not None else cfg.lr * (step + 1) / max(1, cfg.warmup)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
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

    # ---- evaluation --------------------------------------------------------------------------------------------

    @property
    def best_metric(self) -> str:
        if self.cfg.best_metric:
            return self.cfg.best_metric
        return self.val_set.default_metric() if self.val_set is not None else "detection_ap50"

    def scores(self) -> dict[str, float]:
        """The validation set's scores (--val), or the held-out shapes set's summary."""
        cfg = self.cfg
        if self.mask_decoder is None and cfg.vae:
            from decoders import MaskDecoder

            self.mask_decoder = MaskDecoder.from_npz(cfg.vae)
        if cfg.val:
            from .validate import evaluate_val, load_val_set

            if self.val_set is None:
                self.val_set = load_val_set(cfg.val, cfg.val_images, cfg.val_limit, cfg.vae)
            return evaluate_val(self.model, self.val_set, self.mask_decoder, max_new_tokens=cfg.eval_max_new_tokens)
        from .evaluate import ensure_eval_set, eval_summary, evaluate_shapes

        folder = ensure_eval_set(self.out / "eval-data", cfg.eval_scenes, cfg.eval_seed)
        result = evaluate_shapes(self.model, folder, self.mask_decoder, max_new_tokens=cfg.eval_max_new_tokens)
        return eval_summary(result)

    def evaluate(self, step: int, examples: int, log_file) -> bool:
        """Score, log, keep best/ (with --val); True when patience has run out."""
        from .curves import plot_curves

        started = time.perf_counter()
        summary = self.scores()
        seconds = time.perf_counter() - started
        record = {"step": step, "examples": examples, "eval": summary, "eval_seconds": seconds}
        self.log(f"eval step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in summary.items()))
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        plot_curves(self.out / "log.jsonl", self.out / "curves.png", title=self.out.name)
        self.eval_seconds = time.perf_counter() - started  # what an evaluation costs the schedule, drawing included
        if not self.cfg.val:
            return False
        value = summary.get(self.best_metric)
        if value is None:
            raise SpecError(f"--best-metric {self.best_metric}: the validation set has no such score "
                            f"(it has {', '.join(sorted(summary))})")  # fmt: skip
        if self.best["value"] is None or value > self.best["value"]:
            self.best = {"value": float(value), "step": step, "stale": 0, "metric": self.best_metric}
            self.save("best", step, {"eval": summary, "best_metric": self.best_metric})
            return False
        self.best["stale"] += 1
        return bool(self.cfg.patience) and self.best["stale"] >= self.cfg.patience


def train_worker(config: dict) -> None:
    """The Ray Train entry point: one call per worker, with this worker's rank, device and reporting."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    config = dict(config)
    resume = config.pop("_resume", False)
    cfg = FinetuneConfig.from_dict(config)
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
