"""Checks that a result file holds exactly the queries it should.

Every stage after the dataset reads per-query files (attribution shards, neuron lists,
evaluation records). A file cut short at a line boundary, one left from another dataset, or a
shard from another shard count still parses; these checks make it an error that names the file
and the ids that are missing, unexpected or repeated, before anything is built from it.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import Iterable, Mapping, Sequence

from .errors import InputError
from .io import dumps_line, read_jsonl

#: How many ids an error message lists.
SHOWN = 10


def query_sha256(query: Mapping) -> str:
    """The sha256 of a query's line in its dataset file (without the newline): what an
    attribution record of that query was computed from."""
    return hashlib.sha256(dumps_line(query)[:-1].encode("utf-8")).hexdigest()


def shard_queries(queries: Sequence[Mapping], shard: tuple[int, int]) -> list[Mapping]:
    """The queries of shard (i, n): those at list positions p with p % n == i."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise InputError(f"shard must be a pair (i, n), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard ({index}, {count}) is impossible: need n >= 1 and 0 <= i < n")
    return [q for p, q in enumerate(queries) if p % count == index]


def _shown(ids: Iterable[str]) -> str:
    ids = list(ids)
    more = f" ... ({len(ids)} in all)" if len(ids) > SHOWN else ""
    return ", ".join(repr(i) for i in ids[:SHOWN]) + more


def check_query_ids(found: Sequence[str], expected: Sequence[str], source: str | os.PathLike,
                    what: str = "records") -> None:
    """Raise `InputError` naming `source` unless `found` holds every id of `expected` exactly
    once and nothing else."""
    counts = Counter(found)
    wanted = set(expected)
    missing = [q for q in expected if q not in counts]
    unexpected = [q for q in counts if q not in wanted]
    repeated = [q for q, n in counts.items() if n > 1 and q in wanted]
    if not (missing or unexpected or repeated):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} of {len(wanted)} queries: {_shown(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} queries not in the dataset: {_shown(unexpected)}")
    if repeated:
        parts.append(f"{len(repeated)} queries more than once: {_shown(repeated)}")
    raise InputError(f"{source}: {what} do not match the dataset ({'; '.join(parts)}); "
                     "delete the file to have it rebuilt")


def check_records(records: Sequence[Mapping], queries: Sequence[Mapping],
                  source: str | os.PathLike, what: str = "records") -> None:
    """`check_query_ids` of per-query records (their `id`) against dataset `queries`."""
    check_query_ids([r.get("id") for r in records], [q["id"] for q in queries], source, what)


def read_attribution_shards(paths: Sequence[str | os.PathLike],
                            queries: Sequence[Mapping]) -> list[dict]:
    """The records of every shard of one dataset's attribution (shard i of n = len(paths)),
    each shard checked: exactly its queries, each computed from the query now in the dataset
    (`query_sha256`, when the record carries it)."""
    records = []
    for index, path in enumerate(paths):
        mine = shard_queries(queries, (index, len(paths)))
        shard = read_jsonl(path)
        check_records(shard, mine, path, what=f"attribution records (shard {index} of "
                                              f"{len(paths)})")
        digests = {q["id"]: query_sha256(q) for q in mine}
        stale = [r["id"] for r in shard
                 if "query_sha256" in r and r["query_sha256"] != digests[r["id"]]]
        if stale:
            raise InputError(f"{path}: {len(stale)} records were computed from other versions of "
                             f"their queries than the dataset's: {_shown(stale)}; delete the "
                             "file to have it rebuilt")
        records += shard
    return records
