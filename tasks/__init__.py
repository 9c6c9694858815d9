"""Tasks: each builds its prompt and turns generated text into a typed result; looked up by name.

`tasks.adapters` (supervision converters) and `tasks.draw` (annotated images) import supervision and are not
imported here, so that `import tasks` needs only numpy and torch.
"""

from tasks.answer import Answer
from tasks.base import ObjectsResult, ObjectsTask, Task, TextResult, TextTask
from tasks.caption import Caption
from tasks.describe import Describe
from tasks.detect import Detect
from tasks.detections import Detections
from tasks.ocr import Ocr
from tasks.raw import Raw
from tasks.registry import (
    CLASS_TASKS,
    TASKS,
    TaskLookup,
    from_prompt,
    get_task,
    parse_classes,
    takes_classes,
    task_from_cli,
    task_options,
)
from tasks.segment import Segment

__all__ = [
    "CLASS_TASKS",
    "TASKS",
    "Answer",
    "Caption",
    "Describe",
    "Detect",
    "Detections",
    "ObjectsResult",
    "ObjectsTask",
    "Ocr",
    "Raw",
    "Segment",
    "Task",
    "TextResult",
    "TaskLookup",
    "TextTask",
    "from_prompt",
    "get_task",
    "parse_classes",
    "takes_classes",
    "task_from_cli",
    "task_options",
]
