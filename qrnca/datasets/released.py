"""The authors' released datasets (`subject_qa.json`, `language_qa.json`) in our query format.

Each file is one JSON object keyed by uuid; a value holds `sentences` (3 prompts), `obj_label`
(3 gold letters) and `relation_name` (domain or language); language records add `relation`
(Wikidata PID) and `ori_label` (gold object text). Prompts are kept verbatim; the option texts
are parsed from each prompt's " A. …" lines, and the gold text is the option at the gold letter of
the first prompt, which must be the same text in all three prompts (and equal `ori_label`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import DatasetError
from .queries import N_PROMPTS, validate_queries
from .render import LETTERS, parse_options

log = logging.getLogger(__name__)


def convert_released(path: str | os.PathLike) -> list[dict]:
    """Convert one released JSON file to queries, in the file's key order.

    Malformed records raise `DatasetError` naming the file and the record's uuid and position.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("file not found", file=path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON ({exc.msg}, line {exc.lineno})", file=path) from None
    if not isinstance(data, dict):
        raise DatasetError("expected a JSON object keyed by uuid", file=path)

    queries = []
    for position, (uuid, record) in enumerate(data.items(), start=1):

        def fail(msg: str):
            raise DatasetError(f"record {uuid!r}: {msg}", file=path, row=position)

        if not isinstance(record, dict):
            fail("not an object")
        sentences, letters, group = (
            record.get("sentences"),
            record.get("obj_label"),
            record.get("relation_name"),
        )
        if not (
            isinstance(sentences, list)
            and len(sentences) == N_PROMPTS
            and all(isinstance(s, str) for s in sentences)
        ):
            fail(f"'sentences' must be {N_PROMPTS} strings")
        if not (
            isinstance(letters, list) and len(letters) == N_PROMPTS and all(l in LETTERS for l in letters)
        ):
            fail(f"'obj_label' must be {N_PROMPTS} letters in A-D, got {letters!r}")
        if not isinstance(group, str) or not group:
            fail("'relation_name' must be a non-empty string")
        options = []
        for k, sentence in enumerate(sentences):
            parsed = parse_options(sentence)
            if parsed is None:
                fail(f"prompt {k + 1} has no ' A. … D. …' option block")
            options.append(parsed)
        gold = options[0][LETTERS.index(letters[0])]
        for k in range(1, N_PROMPTS):
            text = options[k][LETTERS.index(letters[k])]
            if text != gold:
                fail(f"prompt {k + 1}: option {letters[k]} is {text!r}, but prompt 1's gold is {gold!r}")
        relation = record.get("relation")
        if relation is not None and not isinstance(relation, str):
            fail(f"'relation' must be a string, got {relation!r}")
        if "ori_label" in record and record["ori_label"] != gold:
            fail(f"ori_label {record['ori_label']!r} differs from the gold option {gold!r}")
        if any(len(set(opts)) != len(opts) for opts in options):
            log.warning("%s, record %s: repeated option text (kept verbatim)", path, uuid)
        queries.append(
            {
                "id": f"released-{uuid}",
                "group": group,
                "relation": relation,
                "fact": uuid,
                "prompts": list(sentences),
                "answers": list(letters),
                "options": options,
                "gold": gold,
                "source": {"kind": "released", "file": path.name, "row": position},
            }
        )
    validate_queries(queries)
    return queries
