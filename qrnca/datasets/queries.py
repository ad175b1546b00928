"""The dataset contract (docs/formats.md "Dataset"): validation and atomic writing.

Every builder validates its queries before anything is written, so a dataset file on disk always
satisfies the contract every later stage relies on: three prompts, a gold letter per prompt, four
options per prompt, and the gold text at the gold letter in every prompt.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from ..errors import DatasetError
from ..io import read_jsonl_numbered, write_jsonl
from .render import LETTERS

FIELDS = ("id", "group", "relation", "fact", "prompts", "answers", "options", "gold", "source")
N_PROMPTS = 3


def _is_str_list(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(isinstance(v, str) for v in value)


def validate_query(query: dict, index: int) -> None:
    """Check one query against the contract; raise `DatasetError` naming its position and id.

    Options must be four distinct texts, except for `source.kind == "released"`: the authors'
    files are kept verbatim and one of their physics questions repeats an option ("0.16 N"), so
    there only the gold text must be unambiguous (it occurs once per prompt).
    """
    qid = query.get("id") if isinstance(query, dict) else None
    where = f"query {index + 1} (id {qid!r})"

    def fail(msg: str):
        raise DatasetError(f"{where}: {msg}")

    if not isinstance(query, dict):
        fail(f"not an object ({type(query).__name__})")
    missing = [f for f in FIELDS if f not in query]
    if missing:
        fail(f"missing fields {missing}")
    extra = [f for f in query if f not in FIELDS]
    if extra:
        fail(f"unexpected fields {extra}")
    for key in ("id", "group", "fact", "gold"):
        if not isinstance(query[key], str) or not query[key]:
            fail(f"{key!r} must be a non-empty string")
    if query["relation"] is not None and not isinstance(query["relation"], str):
        fail("'relation' must be a string or null")
    source = query["source"]
    if not isinstance(source, dict) or not {"kind", "file", "row"} <= set(source):
        fail("'source' must be an object with kind, file and row")
    if not _is_str_list(query["prompts"], N_PROMPTS) or not all(query["prompts"]):
        fail(f"'prompts' must be {N_PROMPTS} non-empty strings")
    answers = query["answers"]
    if not _is_str_list(answers, N_PROMPTS) or any(a not in LETTERS for a in answers):
        fail(f"'answers' must be {N_PROMPTS} letters in {'/'.join(LETTERS)}, got {answers!r}")
    options = query["options"]
    if not isinstance(options, list) or len(options) != N_PROMPTS:
        fail(f"'options' must be {N_PROMPTS} lists of {len(LETTERS)} strings")
    gold = query["gold"]
    for k, (opts, letter) in enumerate(zip(options, answers)):
        if not _is_str_list(opts, len(LETTERS)) or not all(o.strip() for o in opts):
            fail(f"prompt {k + 1}: options must be {len(LETTERS)} non-empty strings, got {opts!r}")
        if source.get("kind") != "released" and len(set(opts)) != len(LETTERS):
            fail(f"prompt {k + 1}: options are not distinct: {opts!r}")
        if opts.count(gold) != 1:
            fail(f"prompt {k + 1}: gold {gold!r} must occur exactly once among the options {opts!r}")
        if opts[LETTERS.index(letter)] != gold:
            fail(f"prompt {k + 1}: option {letter} is {opts[LETTERS.index(letter)]!r}, not the gold {gold!r}")


def validate_queries(queries: Sequence[dict]) -> None:
    """Validate every query (see `validate_query`) and that ids are unique."""
    seen: dict[str, int] = {}
    for index, query in enumerate(queries):
        validate_query(query, index)
        qid = query["id"]
        if qid in seen:
            raise DatasetError(f"query {index + 1}: duplicate id {qid!r} (first at query {seen[qid] + 1})")
        seen[qid] = index


def write_dataset(path: str | os.PathLike, queries: Iterable[dict]) -> int:
    """Validate `queries`, then write them atomically as JSON lines; return how many were written.

    Nothing is written (and an existing file is left untouched) if validation fails or there
    are no queries (an empty dataset would give empty attributions and an accuracy of 0).
    """
    queries = list(queries)
    if not queries:
        raise DatasetError("no queries: check the dataset's groups / languages / relations and "
                           "its limit", file=path)
    validate_queries(queries)
    return write_jsonl(path, queries)


def read_dataset(path: str | os.PathLike) -> list[dict]:
    """The queries of a dataset file, checked against the contract before any work is done on
    them: every query valid (`validate_query`), ids unique, at least one query. A failure raises
    `DatasetError` naming the file and line."""
    numbered = read_jsonl_numbered(path)
    if not numbered:
        raise DatasetError("no queries (an empty dataset)", file=path)
    seen: dict[str, int] = {}
    queries = []
    for index, (line, query) in enumerate(numbered):
        try:
            validate_query(query, index)
        except DatasetError as exc:
            raise DatasetError(str(exc), file=path, row=line) from None
        qid = query["id"]
        if qid in seen:
            raise DatasetError(f"duplicate query id {qid!r} (first on row {seen[qid]})",
                               file=path, row=line)
        seen[qid] = line
        queries.append(query)
    return queries
