"""Options as dataclass fields: each option's default, help and command-line flag are written once, on the field,
and the command lines are built from them (jobs/cli.py: `add_spec_arguments`, `spec_from_args`).

A spec is a frozen dataclass that checks itself in `__post_init__`; a bad value raises `SpecError` with one line
that names the option as the user typed it (`--batch-size must be at least 1, got 0`), whether the spec came from
a command line or from Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


class SpecError(ValueError):
    """A job's options that cannot work together or a value out of range; the job exits with status 2."""


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    choices: tuple | Callable[[], tuple] | None = None,
    const: Any = None,
    negate: bool = False,
    repeat: bool = False,
    cli: bool = True,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that is also a command-line option.

    flag: the option's name (default `--field-name`); parse: turns the typed text into the field's value (for
    lists, tables and the like; plain int, float and str fields are converted by their type); const: the value of
    a flag given without one (argparse's nargs="?"); negate: a boolean flag that switches a True default off
    (`--no-progress` for `progress`); repeat: the flag may be given several times, each value parsed to a dict
    and the dicts merged; cli: False for fields that no command line sets (derived or internal)."""
    metadata = {"help": help, "flag": flag, "parse": parse, "metavar": metavar, "choices": choices,
                "const": const, "negate": negate, "repeat": repeat, "cli": cli}  # fmt: skip
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(spec: type | object, name: str) -> str:
    """The command-line flag of a spec's field (for messages)."""
    cls = spec if isinstance(spec, type) else type(spec)
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def check(condition: bool, spec: type | object, name: str, message: str) -> None:
    """Raise SpecError(f"{flag} {message}") unless `condition`."""
    if not condition:
        raise SpecError(f"{flag_of(spec, name)} {message}")


def at_least(spec: object, minimum: float, *names: str) -> None:
    """Each named field (None allowed: "not given") is at least `minimum`."""
    for name in names:
        value = getattr(spec, name)
        check(value is None or value >= minimum, spec, name, f"must be at least {minimum}, got {value}")


def in_unit_interval(spec: object, *names: str) -> None:
    for name in names:
        value = getattr(spec, name)
        check(value is None or 0.0 <= value <= 1.0, spec, name, f"must be a number in [0, 1], got {value}")
