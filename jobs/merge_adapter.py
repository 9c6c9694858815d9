"""Fold a LoRA adapter into its base model and write a plain checkpoint folder.

    python -m jobs.merge_adapter --base checkpoints/paligemma-shapes --adapter /abs/runs/lora/best \\
                                 --output /abs/shapes-stars [--dtype float16]

The adapter is peft's format (what `jobs.finetune --mode lora` writes in RUN/best and RUN/final, or what
transformers + peft save); the output is a Hugging Face checkpoint (config, weights, tokenizer, preprocessor
config, and the base's vae.npz when it has one) that every entry point loads without --adapter, with the logits
of the base with the adapter. Exit status: 0 when written, 2 for a bad argument (a folder that is not a
checkpoint or an adapter, an adapter that does not fit the base, an output folder that is not empty).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from jobs.cli import UsageError, check_checkpoint, command_parser, fail


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m jobs.merge_adapter", __doc__)
    p.add_argument("--base", required=True, help="the checkpoint folder the adapter was trained on")
    p.add_argument("--adapter", required=True, help="peft adapter folder (adapter_config.json + safetensors)")
    p.add_argument("--output", required=True, help="new checkpoint folder (must not exist or be empty)")
    p.add_argument("--dtype", default="float32", help="dtype of the written weights (default float32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model.adapters import AdapterError, apply_adapter, check_adapter
    from model.loading import resolve_dtype

    out = Path(args.output)
    try:
        check_checkpoint(args.base, "--base")
        check_adapter(args.adapter, args.base)
        resolve_dtype(args.dtype)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--output {out}: exists and is not an empty folder")
    except (UsageError, AdapterError, ValueError) as e:
        return fail(str(e) if not isinstance(e, AdapterError) else f"--adapter {e}")
    from model import PaliGemma
    from model.saving import save_pretrained

    # Merged in float32 whatever the output dtype: the update B A is small next to W and would round away.
    model = apply_adapter(PaliGemma.from_pretrained(args.base, dtype="float32"), args.adapter, merge=True)
    save_pretrained(model, out, dtype=args.dtype)
    if (Path(args.base) / "vae.npz").is_file():
        shutil.copyfile(Path(args.base) / "vae.npz", out / "vae.npz")
    print(f"wrote {out} ({args.base} with {args.adapter} merged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
