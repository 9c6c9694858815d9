"""Run one checkpoint on one image, like the reference implementations' inference script.

    python -m model --checkpoint DIR --image PATH --prompt "caption en"
    python -m model --checkpoint DIR --image PATH --prompt "detect cat ; dog" --save out.png
    python -m model --checkpoint DIR --image PATH --prompt "segment cat" --vae vae-oid.npz --save out.png

This command is an application on top of the library: besides the network it uses `decoders` and `tasks` to
print the objects in the answer and draw them (the modules of `model/` themselves know nothing of tasks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .image_processing import load_image
from .loading_errors import CheckpointError
from .paligemma import PaliGemma


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="Hugging Face PaliGemma folder (safetensors)")
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--prompt", required=True, help='e.g. "caption en", "detect cat ; dog", "answer en what is this"')
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--vae", type=Path, help="big_vision's vae-oid.npz, to turn <seg> tokens into masks")
    p.add_argument("--save", type=Path, help="write the image with the answer's boxes and masks drawn on it")
    p.add_argument("--json", action="store_true", help="print the answer, its tokens, log-probs and objects as JSON")
    return p.parse_args(argv)


def read_objects(args: argparse.Namespace, model: PaliGemma, image, gen):
    """The objects (boxes, scores, masks) in the answer; none for a caption or any other plain-text answer."""
    from decoders import MaskDecoder
    from tasks import Raw

    decoder = MaskDecoder.from_npz(args.vae, device=model.device) if args.vae else None
    return Raw(args.prompt).parse(
        gen.text, width=image.width, height=image.height, tokens=gen.tokens, logprobs=gen.logprobs,
        mask_decoder=decoder,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = PaliGemma.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        image = load_image(args.image)
    except (OSError, ValueError) as e:
        print(f"error: cannot read image {args.image}: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    (gen,) = model.generate(
        [image],
        [args.prompt],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        return_logprobs=True,
    )
    seconds = time.perf_counter() - start
    result = read_objects(args, model, image, gen)
    if args.json:
        record = {"prompt": args.prompt, "text": gen.text, "tokens": gen.tokens, "logprobs": gen.logprobs}
        record |= {"objects": result.object_rows(), "seconds": round(seconds, 3)}
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(f"prompt: {args.prompt}")
        print(f"answer: {gen.text}")
        for o, mask in zip(result.objects, result.masks, strict=True):
            box = ", ".join(f"{v:.1f}" for v in o.box)
            score = "   -  " if o.score is None else f"{o.score:.3f}"
            print(f"  {o.label or '(no label)'!s:<20} score {score}  box [{box}]{'  mask' if mask is not None else ''}")
        dropped = sum(result.report.dropped.values())
        if dropped and "<loc" in gen.text:  # a plain-text answer is not a malformed object list
            print(f"  ({dropped} malformed object(s) dropped: {dict(result.report.dropped)})")
        device = "cuda" if model.device.type == "cuda" else "cpu"
        print(f"({len(gen.token_ids)} tokens in {seconds:.2f} s on {device}, {str(model.dtype)[6:]})", file=sys.stderr)
    if args.save:
        from tasks.draw import draw_detections

        draw_detections(image, result.detections()).save(args.save)
        print(f"saved {args.save}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
