"""What every command line shares: one-line errors with exit status 2, and checks of common arguments.

Each entry point (`jobs.label`, `jobs.benchmark`, `jobs.export`, `jobs.finetune`, `python -m model`, `python -m
evals`, `python -m ui`) parses with `Parser` and checks its inputs with the functions here before any heavy work,
so a wrong argument always ends the same way: one line `error: ...` naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from labeling.images import DEFAULT_MAX_PIXELS


class UsageError(ValueError):
    """An argument, file or folder that cannot be used; its message is the one line the user sees."""


class Parser(argparse.ArgumentParser):
    """argparse with one line per error (`error: ...`, exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, doc: str) -> Parser:
    """A command's parser whose --help is its module docstring: the first line, then the rest as written."""
    first, _, rest = doc.partition("\n")
    return Parser(prog=prog, description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def max_pixels(text: str) -> int:
    """--max-pixels: a positive number of pixels (the default is Pillow's own bomb limit, 89.5 megapixels)."""
    return positive_int(text)


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images, before decoding them (default {DEFAULT_MAX_PIXELS:,}, Pillow's bomb limit)",
    )


def check_file(path: str | os.PathLike, flag: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {p}: no such file")
    if not p.is_file():
        raise UsageError(f"{flag} {p}: not a file")
    return p


def check_new_file(path: str | os.PathLike, flag: str) -> Path:
    """A file about to be written: its folder must exist and be a folder."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {p}: the folder {parent} does not exist")
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a folder, not a file")
    return p


def check_checkpoint(path: str | os.PathLike, flag: str = "--checkpoint"):
    """Everything about a checkpoint folder that can be known without reading its weights; returns its config."""
    from model import CheckpointError, PaliGemma

    try:
        return PaliGemma.check_pretrained(path)
    except CheckpointError as e:
        raise UsageError(f"{flag}: {e}") from None


def open_image(path: str | os.PathLike, flag: str, limit: int = DEFAULT_MAX_PIXELS):
    """An image file decoded as the label job decodes it (upright RGB), refused above `limit` pixels."""
    from labeling.images import ImageDecodeError
    from labeling.images import open_image as decode_file

    try:
        return decode_file(str(path), limit)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    except ImageDecodeError as e:
        raise UsageError(f"{flag} {path}: {e}") from None
