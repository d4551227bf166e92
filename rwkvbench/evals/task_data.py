"""Task data files (JSON lines in one of three layouts) checked row by row before any model loads.

A defect found inside lm-eval surfaces as a traceback naming neither file nor line, or not at all (a
`gold` of 7 with three choices is scored as wrong). Here each one is a TaskDataError naming `file:line`,
what was found and what the layout expects.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from rwkvbench.errors import UserError, decode_utf8

# layout -> required field -> what it must hold ("text", "texts": a non-empty list of strings, "index":
# an int indexing that list). Extra fields are allowed and ignored.
LAYOUT_FIELDS = {
    "cloze": {"context": "text", "continuation": "text"},
    "multiple_choice": {"query": "text", "choices": "texts", "gold": "index"},
    "partial": {"context_options": "texts", "continuation": "text", "gold": "index"},
}


class TaskDataError(UserError, FileNotFoundError):
    """Task data that is missing or malformed; the message names the file (and line) and what to supply."""


def layout_help(layout: str) -> str:
    """The layout's fields as the README writes them: {"query", "choices", "gold"}."""
    return "{" + ", ".join(f'"{f}"' for f in LAYOUT_FIELDS[layout]) + "}"


def _check_row(row, layout: str) -> str | None:
    """What is wrong with one row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object {layout_help(layout)}, found {type(row).__name__}"
    fields = LAYOUT_FIELDS[layout]
    missing = [f for f in fields if f not in row]
    if missing:
        return (f"missing field {missing[0]!r} (the {layout} layout needs {layout_help(layout)}; "
                f"this row has {', '.join(repr(k) for k in row) or 'no fields'})")
    for field, kind in fields.items():
        value = row[field]
        if kind == "text" and not isinstance(value, str):
            return f"field {field!r} is {value!r}, expected a string"
        if kind == "texts" and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            return f"field {field!r} is {value!r}, expected a non-empty list of strings"
    if "continuation" in fields and not row["continuation"]:
        return "field 'continuation' is empty, expected the text to score"
    if "gold" in fields:
        options = "choices" if "choices" in fields else "context_options"
        n, gold = len(row[options]), row["gold"]
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < n:
            return (f"field 'gold' is {gold!r} but there are {n} {options}; expected an int in 0..{n - 1}")
    return None


@functools.lru_cache(maxsize=64)
def _validated(path: str, layout: str, mtime_ns: int, size: int) -> int:
    text = decode_utf8(Path(path).read_bytes(), path, TaskDataError)
    rows = 0
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a string
        line = line.strip()
        if not line:
            continue  # blank lines are skipped by the JSON-lines reader too
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno}); expected one "
                                f"object per line {layout_help(layout)}") from None
        problem = _check_row(row, layout)
        if problem:
            raise TaskDataError(f"{path}:{number}: {problem}")
        rows += 1
    if rows == 0:
        raise TaskDataError(f"{path}: no rows (empty file); expected JSON lines {layout_help(layout)}")
    return rows


def validate_task_file(path: str | Path, layout: str, task: str | None = None) -> int:
    """Check every row of a JSON-lines task file against its layout; the number of rows. Cached per file
    version, so a run and its evaluator read a large file once. `task` names the task in the errors."""
    where = f"task {task}: " if task else f"{path}: "
    if layout not in LAYOUT_FIELDS:
        raise TaskDataError(f"{where}unknown layout {layout!r}; valid: {', '.join(LAYOUT_FIELDS)}")
    file = Path(path)
    if not file.is_file():
        missing = f"data file {path} not found" if task else "data file not found"
        raise TaskDataError(f"{where}{missing} (JSON lines in the {layout!r} layout {layout_help(layout)})")
    stat = file.stat()
    return _validated(str(file.resolve()), layout, stat.st_mtime_ns, stat.st_size)
