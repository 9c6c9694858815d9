"""The output row and everything that reads or writes it: its Arrow schema, Parquet parts (local or in object
storage, through `storage`), and the conversion to and from COCO with one label-matching rule.

Depends on `storage` only: the replicas, the exports, evaluation and the web page all build on it.
"""

from rows.coco_format import (
    ConversionReport,
    ImageResolver,
    categories_for,
    category_ids,
    label_key,
    object_to_result,
    rows_to_coco_results,
)
from rows.parts import PartStore, find_parts, iter_rows, read_rows
from rows.schema import MASK_TYPE, OBJECT_TYPE, ROW_SCHEMA, MaskRLE, ObjectRow, Row, error_row, rows_to_table
from rows.text import answer_text, strip_end_tokens

__all__ = [
    "MASK_TYPE",
    "OBJECT_TYPE",
    "ROW_SCHEMA",
    "ConversionReport",
    "ImageResolver",
    "MaskRLE",
    "ObjectRow",
    "PartStore",
    "Row",
    "answer_text",
    "categories_for",
    "category_ids",
    "error_row",
    "find_parts",
    "iter_rows",
    "label_key",
    "object_to_result",
    "read_rows",
    "rows_to_coco_results",
    "rows_to_table",
    "strip_end_tokens",
]
