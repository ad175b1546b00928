"""A user's own multiple-choice dataset, given as a JSON-lines file (`source: jsonl`).

Each line is one query in the dataset format of docs/formats.md "Dataset", where only the fields
the method needs are required:

    {"id": "q1", "group": "astronomy", "prompts": [p1, p2, p3], "answers": ["B", "D", "A"],
     "options": [[4 texts], [4 texts], [4 texts]], "gold": "Jupiter"}

`relation` (default null), `fact` (default the id) and `source` (default this file and line) may
be given too. Every query is checked against the contract (`validate_queries`: three prompts, a
gold letter per prompt, four distinct options per prompt with the gold text at the gold letter,
unique ids); an error names the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError
from ..io import read_jsonl_objects
from .queries import FIELDS, validate_query

REQUIRED = ("id", "group", "prompts", "answers", "options", "gold")


def read_custom(path: str | os.PathLike) -> list[dict]:
    """The queries of a user's JSON-lines dataset, completed with defaults and validated."""
    path = Path(path)
    queries, seen = [], {}
    for lineno, record in read_jsonl_objects(path, REQUIRED, what="fields"):
        merged = {"relation": None, "fact": str(record["id"]),
                  "source": {"kind": "jsonl", "file": str(path), "row": lineno}, **record}
        query = {field: merged.pop(field) for field in FIELDS if field in merged}
        query.update(merged)  # unknown fields last: the validation names them
        try:
            validate_query(query, len(queries))
        except DatasetError as exc:
            raise DatasetError(str(exc), file=path, row=lineno) from None
        if query["id"] in seen:
            raise DatasetError(f"duplicate id {query['id']!r} (first on line {seen[query['id']]})",
                               file=path, row=lineno)
        seen[query["id"]] = lineno
        queries.append(query)
    if not queries:
        raise DatasetError("no queries", file=path)
    return queries
