"""Tasks by name, so that command lines can say `--task detect --classes "cat ; dog"`, and by prompt, so that a
prompt written out in full (a manifest row's, a typed one) finds the task that reads its answer.

This module and the task modules are the only places that know tasks by name; elsewhere a task is asked what it
is (`task.kind == "objects"`, `takes_classes(name)`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from tasks.answer import Answer
from tasks.base import Task
from tasks.caption import Caption
from tasks.describe import Describe
from tasks.detect import Detect
from tasks.ocr import Ocr
from tasks.raw import Raw
from tasks.segment import Segment

TASKS: dict[str, type] = {cls.name: cls for cls in (Caption, Describe, Answer, Ocr, Detect, Segment, Raw)}

# Which task option the command line's free `--prompt TEXT` fills.
_PROMPT_OPTION = {"answer": "question", "raw": "prompt_text"}


def task_options(name: str) -> tuple[str, ...]:
    """The option names a task takes (its dataclass fields)."""
    return tuple(f.name for f in dataclasses.fields(_task_class(name)))


def takes_classes(name: str) -> bool:
    """Whether a task asks for named classes (and so needs --classes): detect and segment."""
    return "classes" in task_options(name)


def get_task(name: str, **options: object) -> Task:
    """Build a task by name, e.g. ``get_task("detect", classes=["cat", "dog"])``.

    Options set to None are left at their defaults; `classes` may also be given in the command-line form
    "cat ; dog". Raises ValueError naming the known tasks or the accepted options.
    """
    cls = _task_class(name)
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(options.get("classes"), str):
        options["classes"] = parse_classes(options["classes"])  # type: ignore[arg-type]
    accepted = task_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"task {name!r} takes options ({', '.join(accepted)}) but got {', '.join(unknown)}")
    try:
        return cls(**options)
    except TypeError as e:  # a required option is missing
        raise ValueError(f"task {name!r} needs options ({', '.join(accepted)}): {e}") from None


def task_from_cli(name: str, classes: str | None = None, prompt: str | None = None, lang: str | None = None) -> Task:
    """The command-line form: `--task NAME [--classes "cat ; dog"] [--prompt TEXT] [--lang xx]`.

    `--prompt` is the question for `answer` and the whole prompt for `raw`; other tasks reject it.
    """
    options: dict[str, object] = {"classes": classes, "lang": lang}
    if prompt is not None:
        if name not in _PROMPT_OPTION:
            raise ValueError(f"task {name!r} takes no --prompt (only {', '.join(sorted(_PROMPT_OPTION))} do)")
        options[_PROMPT_OPTION[name]] = prompt
    return get_task(name, **options)


def from_prompt(prompt: str) -> Task:
    """The task that reads the answer to a prompt written out in full (a manifest row's, a typed one).

    `detect`/`segment` with their classes, `caption`/`describe` with a language, `answer` with a language and a
    question, and `ocr` become those tasks; anything else becomes `raw`, which reads text and any `<loc>` objects.
    So `from_prompt(task.prompt())` gives back an equal task for every task but raw.
    """
    word, _, rest = prompt.strip().partition(" ")
    rest = rest.strip()
    try:
        if word in TASKS and takes_classes(word) and parse_classes(rest):
            return get_task(word, classes=rest)
        if word in ("caption", "describe") and rest and " " not in rest:
            return get_task(word, lang=rest)
        if word == "answer":
            lang, _, question = rest.partition(" ")
            if question.strip():
                return get_task("answer", lang=lang, question=question.strip())
        if word == "ocr" and not rest:
            return get_task("ocr")
    except ValueError:  # e.g. a class name with '<': not our grammar, so a free prompt
        pass
    return Raw(prompt.strip())


class TaskLookup:
    """prompt -> the task that reads its answer: the job's own tasks by their prompts, any other prompt read by
    `from_prompt` once and remembered. The one place a row's prompt is turned back into a task."""

    def __init__(self, tasks: Iterable[Task] = ()):
        self._known: dict[str, Task] = {t.prompt(): t for t in tasks}

    def __call__(self, prompt: str) -> Task:
        task = self._known.get(prompt)
        if task is None:
            task = self._known[prompt] = from_prompt(prompt)
        return task

    def prompts(self) -> list[str]:
        return list(self._known)


def parse_classes(text: str) -> list[str]:
    """'cat ; dog' -> ['cat', 'dog']: split on ';', strip, drop empty names (a trailing ';' is harmless)."""
    return [c.strip() for c in text.split(";") if c.strip()]


def _task_class(name: str) -> type:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# The tasks that ask for named classes and answer with objects (detect, segment), in the registry's order: what
# training records, augmentation and validation are made of.
CLASS_TASKS: tuple[str, ...] = tuple(name for name in TASKS if takes_classes(name))
