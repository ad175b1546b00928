"""Compare two `results/` trees: every file byte for byte, except the logs and the timing fields
of provenance records.

Two runs of the same workflow on the same inputs must write the same bytes (tests: two fresh
demo runs; the SLURM tests: a run through SLURM against a local one). What legitimately differs
is left out: `results/logs/` (timestamps, progress bars) and, in `results/provenance/**.json`,
the fields `qrnca.workflow.provenance.TIMING_FIELDS` (started, finished, wall_time_s, timing). A caller
whose runs differ in more (another host, a SLURM job id) names those record fields too.

    from result_comparison import compare_results
    assert compare_results(run_a / "results", run_b / "results") == []
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from qrnca.workflow.provenance import TIMING_FIELDS

#: Folders of results/ that are never compared.
SKIPPED_DIRS = ("logs",)


def result_files(results: Path) -> dict[str, Path]:
    """{path relative to `results`: path} of every file compared."""
    results = Path(results)
    out = {}
    for root, dirs, files in os.walk(results):
        rel_root = Path(root).relative_to(results)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            out[(rel_root / name).as_posix()] = Path(root) / name
    return out


def _without(record: dict, fields: Iterable[str]) -> dict:
    """A provenance record without `fields` (dotted paths name nested fields)."""
    record = json.loads(json.dumps(record))
    for field in fields:
        *parents, last = field.split(".")
        node = record
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return record


def compare_results(a: Path, b: Path, ignore: Iterable[str] = TIMING_FIELDS) -> list[str]:
    """The differences between results trees `a` and `b` as readable lines (empty: identical):
    files only in one, and files whose bytes differ (provenance records compared without the
    fields in `ignore`)."""
    files_a, files_b = result_files(a), result_files(b)
    ignore = tuple(ignore)
    out = [f"only in {a}: {rel}" for rel in sorted(set(files_a) - set(files_b))]
    out += [f"only in {b}: {rel}" for rel in sorted(set(files_b) - set(files_a))]
    for rel in sorted(set(files_a) & set(files_b)):
        bytes_a, bytes_b = files_a[rel].read_bytes(), files_b[rel].read_bytes()
        if bytes_a == bytes_b:
            continue
        if rel.startswith("provenance/") and rel.endswith(".json"):
            record_a, record_b = (_without(json.loads(x), ignore) for x in (bytes_a, bytes_b))
            if record_a == record_b:
                continue
            keys = sorted(k for k in set(record_a) | set(record_b)
                          if record_a.get(k) != record_b.get(k))
            out.append(f"differs: {rel} (fields {keys})")
        else:
            out.append(f"differs: {rel}")
    return out
