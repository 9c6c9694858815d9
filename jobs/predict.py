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
    check_checkpoint,
    check_new_file,
    fail,
    open_image,
    positive_int,
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
    p.add_argument("--save", type=Path, help="write the image with the answer's boxes and masks drawn on it")
    p.add_argument("--json", action="store_true", help="print the answer, its tokens, log-probs and objects as JSON")
    add_max_pixels(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Check the arguments, load the model, answer the one image, print (and draw) the answer."""

    from tasks import from_prompt

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
        model = load_model(args)
    except UsageError as e:
        return fail(str(e))
    decoder = None
    if args.vae:
        from decoders import MaskDecoder

        decoder = MaskDecoder.from_npz(args.vae, device=model.device)
    from labeling.answers import label_batch

    (labeled,) = label_batch(
        model,
        [from_prompt(args.prompt)],
        [image],
        paths=[str(args.image)],
        mask_decoder=decoder,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    report(args, model, image, labeled)
    return 0 if labeled.row["error"] is None else 1


def load_model(args):
    """The checkpoint as the arguments ask for it; UsageError (one line) when it cannot be loaded."""
    from model import CheckpointError, PaliGemma

    try:
        options = {"compile": True} if args.compile else {}
        return PaliGemma.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device, **options)
    except (CheckpointError, ValueError, RuntimeError) as e:
        raise UsageError(f"--checkpoint {args.checkpoint}: {e}") from None


def report(args, model, image, labeled) -> None:
    """Print the answer (text or objects, or JSON with --json) and save the drawing with --save."""
    from tasks import ObjectsResult

    row, result, gen = labeled.row, labeled.result, labeled.generation
    if args.json:
        record = {"prompt": args.prompt, "text": row["text"], "tokens": gen.tokens if gen else [],
                  "logprobs": gen.logprobs if gen else [], "objects": row["objects"], "error": row["error"],
                  "seconds": round(row["seconds"], 3)}  # fmt: skip
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(f"prompt: {args.prompt}")
        if row["error"]:
            print(f"error: {row['error']}")
        elif isinstance(result, ObjectsResult) and (result.objects or "<loc" in row["text"]):
            print(f"answer: {row['text']}")
            for o, mask in zip(result.objects, result.masks, strict=True):
                box = ", ".join(f"{v:.1f}" for v in o.box)
                score = "   -  " if o.score is None else f"{o.score:.3f}"
                has_mask = "  mask" if mask is not None else ""
                print(f"  {o.label or '(no label)'!s:<20} score {score}  box [{box}]{has_mask}")
            dropped = sum(result.report.dropped.values())
            if dropped:
                print(f"  ({dropped} malformed object(s) dropped: {dict(result.report.dropped)})")
        else:
            text = result.text if hasattr(result, "text") else row["text"]
            print(f"answer: {text}" if text else "answer: (empty: the model answered with <eos> at once)")
        tokens = len(gen.token_ids) if gen else 0
        device = "cuda" if model.device.type == "cuda" else "cpu"
        print(f"({tokens} tokens in {row['seconds']:.2f} s on {device}, {str(model.dtype)[6:]})", file=sys.stderr)
    if args.save and result is not None:
        from tasks.draw import draw_detections

        drawn = draw_detections(image, result.detections()) if isinstance(result, ObjectsResult) else image
        drawn.save(args.save)
        print(f"saved {args.save}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
