"""What a job is asked to do, as frozen dataclasses that check themselves: one field per option, with its default
and help written once (specs/fields.py), from which the command lines are built (jobs/cli.py)."""

from specs.fields import SpecError, option

__all__ = ["SpecError", "option"]
