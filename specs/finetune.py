"""What a fine-tuning run is asked to do: `FinetuneConfig`, a frozen spec whose fields are `jobs.finetune`'s options.

Every field is one option (specs/fields.py): its default and help are written here once, and the command line is
built from them (`jobs.cli.add_spec_arguments`). The spec checks itself when it is made, whether from a command
line, from Python or from an old run's training_config.json, and a bad value raises `SpecError` with one line
naming the option: `--lr must be above 0, got 0`. The run saves it as training_config.json next to its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from specs.fields import SpecError, at_least, check, in_unit_interval, option

MODES = ("full", "attention", "lora", "qlora")
# What --best-metric may name: keys of a validation evaluation (training/validate.py).
VAL_METRICS = ("detect_ap50", "detect_ap", "segment_ap50", "segment_ap", "caption_cider", "caption_exact",
               "ocr_exact", "answer_anls", "answer_exact", "exact")  # fmt: skip
# Fields a run may change between sittings (`--resume RUN --max-minutes M`); every other one is the run's.
SITTING_FIELDS = ("max_minutes", "threads")


def parse_json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {text!r}")
    return value


def parse_curriculum(text: str) -> list[dict]:
    """--curriculum: a name from training/recipes.py or a JSON list of stages."""
    from training.recipes import CURRICULA

    if text in CURRICULA:
        return [dict(stage) for stage in CURRICULA[text]]
    try:
        stages = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a known curriculum ({', '.join(CURRICULA)}) nor a JSON list ({e})") from None
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError("expected a JSON list of stages (objects)")
    return stages


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a run depends on; saved next to the checkpoints as training_config.json."""

    output: str = option("", help="run folder (checkpoints, logs); keep it outside the repository")
    train: str = option("shapes", help=".jsonl / .parquet of image, prefix, suffix (jobs.make_records); or 'shapes'")
    model: str | None = option(None, help="checkpoint folder to fine-tune", cli=False)
    scratch: str | None = option(None, help="train a named size from random initialization (e.g. shapes)", cli=False)
    mode: str = option("full", help="what trains: every weight, the text attention only, or peft LoRA adapters",
                       choices=MODES)  # fmt: skip
    lora_rank: int = option(8, help="LoRA rank")
    lora_alpha: float = option(16.0, help="LoRA alpha (the update is scaled by alpha / rank)")
    steps: int | None = option(None, help="optimizer steps (default 1000, or what fits --max-minutes)")
    batch_size: int = option(16, help="examples per step and worker")
    lr: float = option(3e-4, help="peak learning rate")
    min_lr_ratio: float = option(0.1, help="the cosine ends at this share of --lr")
    warmup: int = option(100, help="linear warm-up steps")
    weight_decay: float = option(0.01, help="AdamW weight decay on matrices")
    grad_clip: float = option(1.0, help="gradient norm clipping")
    vision_lr_scale: float = option(1.0, help="the vision tower's share of --lr")
    seed: int = option(0, help="initialization seed")
    data_seed: int = option(0, help="shuffle / generator / augmentation seed")
    vae: str | None = option(None, help="vae.npz: decodes validation masks; the shapes' segmentation targets")
    bf16: bool = option(False, help="autocast matmuls to bfloat16 (faster only on CPUs with bf16 units)")
    threads: int | None = option(None, help="torch threads (set by the job from the CPUs a worker reserves)",
                                 cli=False)  # fmt: skip
    log_every: int = option(50, help="log the training loss every N steps")
    save_every: int = option(0, help="also write last/ every N steps")
    save_minutes: float = option(5.0, help="write last/ this often")
    save_dtype: str = option("float32", help="dtype of the saved weights")
    max_minutes: float | None = option(None, help="end this sitting after this much wall clock (resumable); "
                                       "without --steps, the schedule is chosen to fit it")  # fmt: skip
    task_mix: dict[str, float] = option(help='shapes only: JSON weights, e.g. \'{"detect": 1, "ocr": 1}\'',
                                        parse=parse_json_object, default_factory=dict)  # fmt: skip
    stages: list[dict] = option(help="shapes only: a named curriculum (training/recipes.py) or a JSON list of "
                                'stages, e.g. \'[{"examples": 20000, "max_objects": 1}, {"examples": 1}]\'',
                                flag="--curriculum", parse=parse_curriculum, default_factory=list)  # fmt: skip
    pool: int = option(1, help="group the examples of N batches by length (1: off)")
    data_workers: int = option(0, help="1: make batches in a second process", choices=(0, 1))
    eval_every: int = option(0, help="score --val (or the held-out shapes set) every N steps and at the end")
    eval_scenes: int = option(50, help="held-out shapes scenes (and as many words)")
    eval_seed: int = option(555, help="held-out shapes set seed")
    eval_max_new_tokens: int = option(128, help="answer length limit when evaluating")
    val: str | None = option(None, help="validation records (.jsonl / .parquet) or a COCO file, labeled every "
                             "--eval-every steps with the label job's code and scored with evals")  # fmt: skip
    val_images: str | None = option(None, help="image folder of a COCO --val (default: the file's folder)")
    val_limit: int | None = option(None, help="score only the first N validation records")
    best_metric: str | None = option(None, help="validation score that picks RUN/best/ (default per task: "
                                     "detect_ap50, segment_ap50, caption_cider, ocr_exact, answer_anls)",
                                     choices=VAL_METRICS)  # fmt: skip
    patience: int = option(0, help="stop after N evaluations without a better --best-metric (0: never)")
    hflip: float = option(0.0, help="share of object records flipped left-right, boxes and masks with them "
                          "(never a record whose text says left or right)")  # fmt: skip
    scale_jitter: float = option(0.0, help="object records are zoomed by a factor in [1 - J, 1 + J] about a "
                                 "random point, boxes moved exactly; objects cut by the frame are clipped")  # fmt: skip
    shuffle_objects: bool = option(False, help="reshuffle the order of each record's objects every epoch")
    compile: bool = option(False, help="torch.compile the training step")
    vision_pretrain: int = option(0, help="shapes only: pretrain the vision tower on N images' dense labels first",
                                  metavar="N")  # fmt: skip
    vision_pretrain_lr: float = option(1e-3, help="learning rate of --vision-pretrain")
    vision_pretrain_words: float = option(0.4, help="share of word images among the pretraining images")
    image_size: int | None = option(None, help="train at this input resolution (position embeddings resized)")

    def __post_init__(self) -> None:
        check(bool(self.output), self, "output", "is required (or --resume RUN)")
        if (self.model is None) == (self.scratch is None):
            raise SpecError("give exactly one of --model (a checkpoint folder) and --scratch (a named size)")
        at_least(self, 1, "steps", "batch_size", "pool", "lora_rank", "log_every", "eval_scenes",
                 "eval_max_new_tokens", "val_limit", "image_size", "threads")  # fmt: skip
        at_least(self, 0, "warmup", "save_every", "eval_every", "patience", "vision_pretrain", "weight_decay")
        for name in ("lr", "lora_alpha", "grad_clip", "save_minutes", "max_minutes", "vision_pretrain_lr"):
            value = getattr(self, name)
            check(value is None or value > 0, self, name, f"must be above 0, got {value}")
        in_unit_interval(self, "min_lr_ratio", "vision_lr_scale", "hflip", "vision_pretrain_words")
        check(0.0 <= self.scale_jitter < 1.0, self, "scale_jitter", f"must be in [0, 1), got {self.scale_jitter}")
        if self.train != "shapes":
            for name in ("vision_pretrain", "task_mix", "stages"):
                check(not getattr(self, name), self, name, "uses the shapes generator: it needs --train shapes")
        if self.val is None:
            check(self.best_metric is None, self, "best_metric", "needs --val")
            check(not self.patience, self, "patience", "needs --val")
            check(not self.eval_every or self.train == "shapes", self, "eval_every",
                  "needs --val (or --train shapes, for the held-out shapes set)")  # fmt: skip
        check(self.mode != "qlora" or not self.scratch, self, "mode", "qlora adapts a pretrained --model")
        self.curriculum()  # a bad stage fails here, before any work

    def curriculum(self) -> tuple:
        from training.shapes import Stage

        try:
            if self.stages:
                return tuple(Stage.from_dict(d) for d in self.stages)
            return (Stage(1, mix=dict(self.task_mix)),) if self.task_mix else ()
        except (ValueError, TypeError) as e:
            raise SpecError(f"--curriculum: {e}") from None

    @property
    def adapter(self) -> bool:
        """True when the run trains peft adapters (saved as adapters, not as full checkpoints)."""
        return self.mode in ("lora", "qlora")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> FinetuneConfig:
        """A saved training_config.json, also one written before a field existed (it takes the field's default);
        a key this version does not know is refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise SpecError(f"training_config.json: unknown settings {', '.join(unknown)}")
        return cls(**saved)
