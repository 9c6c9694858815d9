"""LoRA adapters in peft's own format, on our PaliGemma: made for training, saved, loaded, merged.

An adapter folder is what peft writes: `adapter_config.json` (a `peft.LoraConfig`) and `adapter_model.safetensors`
whose keys are `base_model.model.` + the Hugging Face module name + `.lora_A.weight` / `.lora_B.weight`, so that

    PeftModel.from_pretrained(PaliGemmaForConditionalGeneration.from_pretrained(BASE), ADAPTER)

loads it in transformers, and an adapter trained with transformers + peft loads here. Our module names are
transformers' in-memory names without their leading `model.` (`language_model.layers.0.self_attn.q_proj` here is
`model.language_model.layers.0.self_attn.q_proj` there), so one prefix maps between the two; which modules an
adapter targets is decided by peft's own matcher on the Hugging Face names, so a config written for transformers
(a list of leaf names, a regex) selects here exactly the modules it selects there.

The LoRA layers themselves are peft's (`peft.tuners.lora.LoraModel` wraps our module in place): this file only
names things and moves tensors; it owns no LoRA arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"
# Our top-level modules and transformers' (5.x) in-memory names for them; lm_head is the same in both.
_HF_PARENTS = ("vision_tower", "multi_modal_projector", "language_model")
# The projections a training run adapts by default: the text decoder's attention and MLP (the vision tower and
# the projector stay frozen), as the PaliGemma fine-tuning guides and maestro do.
DEFAULT_TARGETS = (
    r".*language_model\.layers\.\d+\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


class AdapterError(ValueError):
    """An adapter folder that cannot be used with this base model; the message names the folder and the problem."""


def hf_name(name: str) -> str:
    """Our module or parameter name -> transformers' in-memory name (`language_model.x` -> `model.language_model.x`)."""
    return "model." + name if name.split(".", 1)[0] in _HF_PARENTS else name


def our_name(name: str) -> str:
    """transformers' name (any layout model.loading knows, e.g. `language_model.model.layers...`) -> ours."""
    from model.loading import our_key

    return our_key(name) or name


def lora_config(rank: int = 8, alpha: float = 16.0, targets: str | list[str] = DEFAULT_TARGETS, dropout: float = 0.0):
    """The peft config a training run saves (targets in Hugging Face names, as transformers will read them)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none")


def _matched_modules(model: nn.Module, config) -> list[str]:
    """Our names of the linear layers that `config` targets, matched by peft on their Hugging Face names."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and check_target_module_exists(config, hf_name(name))
    ]


def inject(model: nn.Module, config) -> list[str]:
    """Put peft's LoRA layers (lora_B zero: the model's function is unchanged) on the modules `config` targets, in
    place, with only their lora_A / lora_B trainable. Returns our names of the adapted modules."""
    import copy

    from peft.tuners.lora import LoraModel

    names = _matched_modules(model, config)
    if not names:
        raise AdapterError(f"the adapter's target_modules {config.target_modules!r} match no linear layer")
    ours = copy.deepcopy(config)
    ours.target_modules = set(names)  # exact names: peft matches a full name or a "."-suffix, so no other layer
    ours.layers_to_transform = None
    ours.layers_pattern = None
    LoraModel(model, ours, ADAPTER_NAME)  # modifies `model` in place; the wrapper itself is not needed
    return names


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights under peft's saved names in Hugging Face naming (`base_model.model.model.language_model...`)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    return {PEFT_PREFIX + hf_name(k): v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def save_adapter(model: nn.Module, config, folder: str | Path, base: str | None = None) -> Path:
    """Write adapter_config.json and adapter_model.safetensors (float32) as peft's `save_pretrained` does."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.base_model_name_or_path = base
    config.save_pretrained(str(folder))
    save_file(adapter_state_dict(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return folder


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def read_adapter(folder: str | Path):
    """(peft LoraConfig, state dict in our names) of an adapter folder; AdapterError for anything unusable."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise AdapterError(f"{folder}: not a peft adapter folder ({ADAPTER_CONFIG} is missing)")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(f"{folder}: {ADAPTER_WEIGHTS} is missing (pickled adapter_model.bin is refused)")
    try:
        kind = json.loads((folder / ADAPTER_CONFIG).read_text()).get("peft_type")
        config = LoraConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{folder}: {ADAPTER_CONFIG} cannot be read ({e})") from None
    if kind not in (None, "LORA"):
        raise AdapterError(f"{folder}: a {kind} adapter; only LoRA adapters are supported")
    state = {}
    for key, value in load_file(str(folder / ADAPTER_WEIGHTS)).items():
        name = key.removeprefix(PEFT_PREFIX)
        module, _, leaf = name.partition(".lora_")
        state[f"{our_name(module)}.lora_{leaf}"] = value
    return config, state


def apply_adapter(model: nn.Module, folder: str | Path, merge: bool = True) -> nn.Module:
    """Load the adapter in `folder` onto `model` (in place) and, with merge, fold it into the weights so the model
    runs at its plain speed. Every weight of the file must land on an adapted module of the right shape, and every
    adapted module must get its weights: AdapterError names the first one that does not."""
    from peft import set_peft_model_state_dict

    config, state = read_adapter(folder)
    names = inject(model, config)
    expected = {f"{n}.lora_{ab}.weight" for n in names for ab in ("A", "B")}
    missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unknown:
        raise AdapterError(
            f"{folder}: the adapter does not fit this model"
            + (f"; no weights for {missing[0]}" if missing else "")
            + (f"; unknown weight {unknown[0]}" if unknown else "")
        )
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        ref = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
        for key, value in state.items():
            module, _, leaf = key.partition(".lora_")
            target = ref[f"{module}.lora_{leaf.replace('.weight', '.' + ADAPTER_NAME + '.weight')}"]
            if tuple(target.shape) != tuple(value.shape):
                raise AdapterError(
                    f"{folder}: {key} has shape {tuple(value.shape)}, the model wants {tuple(target.shape)}"
                )
    result = set_peft_model_state_dict(model, {k: v.to(dtype) for k, v in state.items()}, adapter_name=ADAPTER_NAME)
    if getattr(result, "unexpected_keys", None):
        raise AdapterError(f"{folder}: unexpected adapter weights {result.unexpected_keys[:1]}")
    return merge_adapter(model) if merge else model


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base linear and put the plain nn.Linear back (peft's merge_and_unload)."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge(safe_merge=True)
                setattr(parent, child_name, child.get_base_layer())
    return model


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights `merge_adapter` would give, computed without touching `model` (training goes on)."""
    from peft.tuners.lora import LoraLayer

    state = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    out: dict[str, torch.Tensor] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        parent = owner.removesuffix(".base_layer")
        if owner.endswith(".base_layer") and parent in layers:
            if leaf == "weight":
                value = value + layers[parent].get_delta_weight(ADAPTER_NAME).detach().to(value.dtype)
            key = f"{parent}.{leaf}"
        out[key] = value
    return out


def load_with_adapter(checkpoint: str | Path, adapter: str | Path | None = None, **load_options):
    """`PaliGemma.from_pretrained(checkpoint, **load_options)` with the adapter merged in: the one call for every
    entry point that takes `--adapter` (jobs.label, jobs.benchmark, python -m model, the web page).

    The merge is done in float32 and the model cast to the dtype asked for afterwards: in bfloat16 the small
    update B A would mostly round away against W."""
    from model import PaliGemma
    from model.loading import resolve_dtype

    if adapter is None:
        return PaliGemma.from_pretrained(checkpoint, **load_options)
    dtype = resolve_dtype(load_options.pop("dtype", None), load_options.get("device"))
    model = apply_adapter(PaliGemma.from_pretrained(checkpoint, dtype=torch.float32, **load_options), adapter)
    if dtype != torch.float32:
        model.to(dtype)  # the runner lays the weights out again on its first call: it follows weight changes
    return model


def check_adapter(folder: str | Path, base: str | Path) -> None:
    """Everything about an adapter that can be known before loading any weights (for a job's argument checks):
    AdapterError when it is not a LoRA adapter folder or targets nothing of the base's layers."""
    from model import PaliGemma

    config, state = read_adapter(folder)
    with torch.device("meta"):
        model = PaliGemma(PaliGemma.check_pretrained(base))
    names = set(_matched_modules(model, config))
    outside = sorted({k.partition(".lora_")[0] for k in state} - names)
    if not names or outside:
        raise AdapterError(
            f"{folder}: the adapter does not fit {base}" + (f" (no layer {outside[0]})" if outside else "")
        )
