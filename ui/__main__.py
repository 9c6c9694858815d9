"""Serve the web page: `python -m ui --checkpoint DIR [--port 7860] [--host 127.0.0.1] [--share]`.

Without --checkpoint the page opens with its Model panel, where a folder can be loaded. It listens on 127.0.0.1
unless --host says otherwise (0.0.0.0 for every interface); --share asks gradio for a public link, which needs the
internet and exposes the page to anyone with the link.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from jobs.cli import Parser, UsageError, check_checkpoint, fail


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The page's command line."""
    p = Parser(prog="python -m ui", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="Hugging Face PaliGemma folder; loadable from the page otherwise")
    p.add_argument("--vae", type=Path, help="big_vision's vae-oid.npz, to draw segmentation masks")
    p.add_argument("--adapter", type=Path, help="a LoRA adapter folder (peft's format) merged into --checkpoint")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=7860)
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    return p.parse_args(argv)


def port(text: str) -> int:
    """argparse type: a TCP port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m ui`: check the arguments, load the model, serve until Ctrl+C."""
    args = parse_args(argv)
    try:
        if args.checkpoint is not None:
            check_checkpoint(args.checkpoint)
        if args.vae is not None and not args.vae.is_file():
            raise UsageError(f"--vae {args.vae}: no such file")
        if args.adapter is not None and args.checkpoint is None:
            raise UsageError("--adapter needs --checkpoint, the model it was trained from")
    except UsageError as e:
        return fail(str(e))
    from ui.logic import Workbench

    bench = Workbench()
    if args.checkpoint is not None:
        said = bench.load(str(args.checkpoint), args.dtype, args.device, str(args.vae) if args.vae else None,
                          str(args.adapter) if args.adapter else None)  # fmt: skip
        if said.startswith("**Error:**"):
            print("error:" + said.removeprefix("**Error:**"), file=sys.stderr)
            return 2
        print(said.replace("`", ""), file=sys.stderr)
    from ui.app import build_app, launch

    try:
        launch(build_app(bench), host=args.host, port=args.port, share=args.share)
    except OSError as e:  # the port is taken, the address is not this machine's
        reason = str(e).split(". ")[0]  # gradio's advice on its own parameter names does not apply here
        print(f"error: cannot serve on {args.host}:{args.port} ({reason}); pick another --port", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
