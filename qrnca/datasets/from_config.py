"""Build a dataset from its config entry (config/schema: `datasets[*]`).

The one place that maps config keys onto the builders' arguments, so that the workflow script
stays a thin adapter and the mapping is unit-tested.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from ..errors import InputError
from .custom import read_custom
from .fetch import verify_local
from .mlama import build_mlama
from .mmlu import build_mmlu
from .released import convert_released

log = logging.getLogger(__name__)


def load_instructions(path: str | None) -> dict | None:
    """Instruction templates for extra languages (a JSON file {lang: [3 templates]}, as the demo
    world writes), or None."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"instructions file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(f"{path}: expected an object mapping language codes to lists of templates")
    return data


def _capped(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


def first_per_group(queries: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` queries of each group, in file order (all of them when None)."""
    if limit is None:
        return queries
    taken: dict[str, int] = {}
    out = []
    for query in queries:
        if taken.get(query["group"], 0) < limit:
            taken[query["group"]] = taken.get(query["group"], 0) + 1
            out.append(query)
    return out


def build_from_spec(spec: Mapping, raw: str, *, split: str | None = None) -> list[dict]:
    """Queries of the dataset described by `spec`, read from `raw`. `split` selects another MMLU
    split and takes all of its eligible questions per subject: the held-out questions of Table 7.

    `spec["limit"]` (a size knob; None keeps the configured sizes): at most that many questions
    per MMLU subject (held-out ones too), facts per mLAMA relation (the same facts in every
    language), or queries per group of a released or user (`jsonl`) file, in file order."""
    source = spec["source"]
    limit = spec.get("limit")
    if source in ("mmlu", "mlama") and spec.get("verify_checksums", True):
        for mismatch in verify_local(raw, source):
            log.warning("checksum differs from the pinned release: %s", mismatch)
    if source == "mmlu":
        heldout = split is not None  # every eligible question of that split, up to the limit
        groups = {g: None if heldout else _capped(n, limit) for g, n in spec["groups"].items()}
        queries = build_mmlu(
            raw,
            groups,
            split=split or spec.get("split", "test"),
            seed=spec.get("seed", 0),
            max_prompt_chars=spec.get("max_prompt_chars"),
            duplicate_options=spec.get("duplicate_options", "skip"),
        )
        return first_per_group(queries, limit) if heldout else queries
    if source == "mlama":
        return build_mlama(
            raw,
            spec["languages"],
            spec["relations"],
            facts_per_relation=_capped(spec.get("facts_per_relation", 20), limit),
            seed=spec.get("seed", 0),
            fact_selection=spec.get("fact_selection", "sample"),
            instructions=load_instructions(spec.get("instructions")),
        )
    if source == "released":
        return first_per_group(convert_released(raw), limit)
    if source == "jsonl":
        return first_per_group(read_custom(raw), limit)
    raise InputError(f"dataset {spec.get('name')!r}: unknown source {source!r}")
