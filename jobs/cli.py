"""What every command line shares: one-line errors with exit status 2, and checks of common arguments.

Each entry point (`jobs.label`, `jobs.benchmark`, `jobs.export`, `jobs.finetune`, `python -m model`, `python -m
evals`, `python -m ui`) parses with `Parser` and checks its inputs with the functions here before any heavy work,
so a wrong argument always ends the same way: one line `error: ...` naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from labeling.images import DEFAULT_MAX_PIXELS


class UsageError(ValueError):
    """An argument, file or folder that cannot be used; its message is the one line the user sees."""


class Parser(argparse.ArgumentParser):
    """argparse with one line per error (`error: ...`, exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        """argparse's own errors (a missing or malformed option) in the project's one-line form."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, doc: str) -> Parser:
    """A command's parser whose --help is its module docstring: the first line, then the rest as written."""
    first, _, rest = doc.partition("\n")
    return Parser(prog=prog, description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(message: str) -> int:
    """Print the one-line error; returns the exit status 2 for the caller to return."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
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
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    """--max-pixels, with the label job's default (SourceSpec.max_pixels)."""
    p.add_argument(
        "--max-pixels",
        type=max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images, before decoding them (default {DEFAULT_MAX_PIXELS:,}, Pillow's bomb limit)",
    )


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


# ---- command lines built from specs (specs/fields.py) ------------------------------------------------------------


def _base_type(hint: Any) -> Any:
    """int for `int | None`, and so on: the type argparse converts a typed value to."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _converter(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _shown(default: Any) -> str | None:
    if default in (None, False, "", (), {}) or isinstance(default, bool):
        return None
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if isinstance(default, int) and default >= 10_000:
        return f"{default:,}"
    return str(default)


def add_spec_arguments(parser, spec: type, exclude: tuple[str, ...] = (), title: str | None = None):
    """Add one option per command-line field of the frozen dataclass `spec` (see specs.fields.option): its flag,
    help and default as the field declares them. Returns the argument group (or the parser)."""
    target = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(spec)
    for field in dataclasses.fields(spec):
        meta = field.metadata
        if not meta or not meta.get("cli", True) or field.name in exclude:
            continue
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = None if required else (
            field.default if field.default is not dataclasses.MISSING else field.default_factory())  # fmt: skip
        shown = _shown(default)
        kw: dict[str, Any] = {"dest": field.name, "default": default,
                              "help": meta["help"] + (f" (default {shown})" if shown else "")}  # fmt: skip
        if _base_type(hints[field.name]) is bool and meta.get("parse") is None:
            kw["action"] = "store_false" if meta.get("negate") else "store_true"
        else:
            kw["type"] = _converter(meta["parse"]) if meta.get("parse") else _base_type(hints[field.name])
            choices = meta.get("choices")
            if choices is not None:
                kw["choices"] = choices() if callable(choices) else choices
            kw["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(_base_type(hints[field.name]))
            if meta.get("const") is not None:
                kw |= {"nargs": "?", "const": meta["const"]}
            if meta.get("repeat"):
                kw |= {"action": "append", "default": None}
            kw["required"] = required
        target.add_argument(flag, **kw)
    return target


def spec_from_args(spec: type, args: argparse.Namespace, **overrides: Any):
    """The spec built from the parsed command line (its fields that the parser has), with `overrides`; raises
    the spec's own SpecError for a bad value."""
    values = {}
    for field in dataclasses.fields(spec):
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if field.metadata.get("repeat"):  # one dict per occurrence of the flag
            value = {k: v for part in value or () for k, v in part.items()}
        values[field.name] = value
    return spec(**(values | overrides))
