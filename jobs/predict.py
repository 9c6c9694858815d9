"""Run one checkpoint on one image, like the reference implementations' inference script (`python -m model`).

    python -m model --checkpoint DIR --image PATH --prompt "caption en"
    python -m model --checkpoint DIR --image PATH --prompt "detect cat ; dog" --save out.png
    python -m model --checkpoint DIR --image PATH --prompt "segment cat" --vae vae-oid.npz --save out.png

The prompt is read as the label job reads a manifest's prompts (`tasks.from_prompt`), and the answer becomes a
row through the same code (`labeling.answers.label_batch`): the objects printed here are the ones the job would
write. The image goes through the job's decoder too, with the same pixel limit (--max-pixels).
Exit status: 0 on success, 2 for a bad argument, checkpoint or image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.cli import (
    Parser,
    UsageError,
    add_max_pixels,
    add_spec_arguments,
    check_checkpoint,
    check_new_file,
    fail,
    open_image,
    positive_int,
    spec_from_args,
)


def build_parser() -> Parser:
    """`python -m model`'s command line."""
    p = Parser(prog="python -m model", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="Hugging Face PaliGemma folder (safetensors)")
    p.add_argument("--image", required=True, help="an image file (local path or URI)")
    p.add_argument("--prompt", required=True, help='e.g. "caption en", "detect cat ; dog", "answer en what is this"')
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--compile", action="store_true", help="compile the decode step (slow start, faster decoding)")
    p.add_argument("--vae", type=Path, help="big_vision's vae-oid.npz, to turn <seg> tokens into masks")
    p.add_argument("--adapter", type=Path, help="a LoRA adapter folder (peft's format) merged into the checkpoint")
    p.add_argument("--save", type=Path, help="write the image with the answer's boxes and masks drawn on it")
    p.add_argument("--json", action="store_true", help="print the answer, its tokens, log-probs and objects as JSON")
    add_max_pixels(p)
    from specs.label import TileSpec

    add_spec_arguments(p, TileSpec, title="tiles: large images, small objects")
    return p


def main(argv: list[str] | None = None) -> int:
    """Check the arguments, load the model, answer the one image, print (and draw) the answer."""

    from specs.fields import SpecError
    from specs.label import TileSpec

    args = build_parser().parse_args(argv)
    try:
        check_checkpoint(args.checkpoint)
        if args.vae is not None and not args.vae.is_file():
            raise UsageError(f"--vae {args.vae}: no such file")
        if args.save is not None:
            check_new_file(args.save, "--save")
        if args.sample and not args.temperature > 0:
            raise UsageError(f"--temperature must be above 0 when sampling, got {args.temperature}")
        if not 0 < args.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
        if not args.prompt.strip() or "\n" in args.prompt:
            raise UsageError("--prompt must be one non-empty line")
        image = open_image(args.image, "--image", args.max_pixels)
        tiles = spec_from_args(TileSpec, args)
        model = load_model(args)
    except (UsageError, SpecError) as e:
        return fail(str(e))
    decoder = None
    if args.vae:
        from decoders import MaskDecoder

        decoder = MaskDecoder.from_npz(args.vae, device=model.device)
    row, gen = answer(args, model, image, decoder, tiles)
    report(args, model, image, row, gen)
    return 0 if row["error"] is None else 1


def answer(args, model, image, decoder, tiles):
    """The row of the one image and prompt (tiled with --tile), and its generation (None when tiled: each tile
    had its own)."""
    import numpy as np

    from labeling import label_batch
    from tasks import from_prompt

    task = from_prompt(args.prompt)
    if tiles.on:
        from labeling.tiled import label_tiled

        config = tiles.config(model.image_processor.size)
        size = model.image_processor.size
        (row,) = label_tiled(model, [task], [np.asarray(image)], config, size, image_ids=[0], paths=[str(args.image)],
                             mask_decoder=decoder, max_new_tokens=args.max_new_tokens)  # fmt: skip
        return row, None
    (labeled,) = label_batch(model, [task], [image], paths=[str(args.image)], mask_decoder=decoder,
                             max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed)  # fmt: skip
    return labeled.row, labeled.generation


def load_model(args):
    """The checkpoint as the arguments ask for it; UsageError (one line) when it cannot be loaded."""
    from model import CheckpointError
    from model.adapters import AdapterError, check_adapter, load_with_adapter

    try:
        if args.adapter is not None:
            check_adapter(args.adapter, args.checkpoint)
    except AdapterError as e:
        raise UsageError(f"--adapter: {e}") from None
    try:
        options = {"compile": True} if args.compile else {}
        return load_with_adapter(args.checkpoint, args.adapter, dtype=args.dtype, device=args.device, **options)
    except (CheckpointError, ValueError, RuntimeError) as e:
        raise UsageError(f"--checkpoint {args.checkpoint}: {e}") from None


def report(args, model, image, row, gen) -> None:
    """Print the answer (text or objects, or JSON with --json) and save the drawing with --save."""
    from tasks import from_prompt

    objects = from_prompt(args.prompt).kind == "objects" and (row["objects"] or "<loc" in row["text"])
    if args.json:
        record = {"prompt": args.prompt, "text": row["text"], "tokens": gen.tokens if gen else [],
                  "logprobs": gen.logprobs if gen else [], "objects": row["objects"], "error": row["error"],
                  "seconds": round(row["seconds"], 3), "tiles": row.get("tiles")}  # fmt: skip
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(f"prompt: {args.prompt}")
        if row["error"]:
            print(f"error: {row['error']}")
        elif objects:
            print(f"answer: {row['text']}")
            for o in row["objects"]:
                box = ", ".join(f"{v:.1f}" for v in o["box"])
                score = "   -  " if o["score"] is None else f"{o['score']:.3f}"
                print(f"  {o['label'] or '(no label)'!s:<20} score {score}  box [{box}]{'  mask' if o['mask'] else ''}")
        else:
            from rows.text import answer_text

            text = answer_text(row["text"])
            print(f"answer: {text}" if text else "answer: (empty: the model answered with <eos> at once)")
        tiles = f" over {row['tiles']} tiles" if row.get("tiles") else ""
        tokens = len(gen.token_ids) if gen else sum(len(t) for t in row.get("tile_texts") or ())
        what = f"{tokens} tokens" if gen else f"{tokens} characters"
        device = "cuda" if model.device.type == "cuda" else "cpu"
        print(f"({what}{tiles} in {row['seconds']:.2f} s on {device}, {str(model.dtype)[6:]})", file=sys.stderr)
    if args.save and not row["error"]:
        from tasks.detections import Detections
        from tasks.draw import draw_detections

        drawn = draw_detections(image, Detections.from_row(row)) if objects else image
        drawn.save(args.save)
        print(f"saved {args.save}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
