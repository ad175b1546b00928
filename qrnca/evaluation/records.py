"""Evaluation records (`evaluation/{method}.jsonl`, docs/formats.md): the operations, reading and
checking the records. Free of torch, so that the tables and figures that read them load fast;
running the interventions that write them is `qrnca.evaluation.runner`.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Mapping, Sequence

import pandas as pd

from ..datasets.queries import read_dataset
from ..errors import InputError, NonFiniteError
from ..io import read_jsonl
from ..neurons import methods

BOOST = 2.0
SUPPRESS = 0.0
#: The two operations of the paper and their activation factors (docs/method.md §6).
OPS: dict[str, float] = {"boost": BOOST, "suppress": SUPPRESS}
#: The two prompt sets of every query: its own prompts and the control prompts.
SETS = ("related", "unrelated")
#: How a probability change averages over prompts (module `qrnca.outputs.evaluation_tables`).
PCR_AVERAGES = ("ratio_of_means", "mean_of_ratios")


def check_finite(records: Iterable[Mapping], source: str = "evaluation") -> None:
    """Raise `NonFiniteError` at the first record whose p0 or p1 is NaN or infinite, naming the
    query, the prompt and the intervention (a NaN would otherwise become an empty PCR cell)."""
    for row, record in enumerate(records, start=1):
        for key in ("p0", "p1"):
            value = record.get(key, 0.0)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise NonFiniteError(
                    f"{source}, record {row}: {key} = {value!r} for query {record.get('id')!r} "
                    f"({record.get('op')}, {record.get('set')} prompt {record.get('prompt_index')} "
                    f"of query {record.get('prompt_id')!r})")


def read_evaluation(path: str | os.PathLike, query_ids: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """An evaluation file as a DataFrame (one row per record; a method that does not apply is
    one row whose `not_applicable` column holds the reason, see `not_applicable_of`). A NaN or
    infinite probability is an error naming the file and the query; with `query_ids`, the
    records must hold exactly those queries (`qrnca.consistency.check_query_ids`)."""
    from ..consistency import check_query_ids

    records = read_jsonl(path)
    if not records:
        raise InputError(f"{path}: no evaluation records")
    if methods.not_applicable_reason(records, str(path)) is None:  # all or none
        check_finite(records, str(path))
        if query_ids is not None:
            check_query_ids(list(dict.fromkeys(r.get("id") for r in records)), query_ids, path,
                            what="evaluation records")
    return pd.DataFrame.from_records(records)


def not_applicable_of(frame: pd.DataFrame) -> str | None:
    """The reason an evaluation frame's method does not apply, or None."""
    if methods.NOT_APPLICABLE in frame.columns:
        return str(frame[methods.NOT_APPLICABLE].iloc[0])
    return None


def read_results(paths: Sequence[str | os.PathLike], datasets: Sequence[str],
                 methods: Sequence[str],
                 query_ids: Mapping[str, Sequence[str]] | None = None
                 ) -> dict[tuple[str, str], pd.DataFrame]:
    """{(dataset, method): records} from evaluation files listed dataset-major, method-minor
    (the order of the workflow's `evaluation_files`), the input of `table4` / `table6`; with
    `query_ids` ({dataset: ids}), each file must hold exactly its dataset's queries."""
    pairs = [(d, m) for d in datasets for m in methods]
    if len(paths) != len(pairs):
        raise InputError(f"expected {len(pairs)} evaluation files ({len(datasets)} datasets x "
                         f"{len(methods)} methods), got {len(paths)}")
    return {(d, m): read_evaluation(path, None if query_ids is None else query_ids[d])
            for (d, m), path in zip(pairs, paths)}


def read_checked_results(evaluation_paths: Sequence[str | os.PathLike],
                         dataset_paths: Sequence[str | os.PathLike], datasets: Sequence[str],
                         methods: Sequence[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """`read_results` with each file checked against the query ids of its dataset's file
    (`dataset_paths`, in the order of `datasets`): what Tables 4 and 6 read."""
    ids = {name: [q["id"] for q in read_dataset(path)] for name, path in zip(datasets, dataset_paths)}
    return read_results(list(evaluation_paths), datasets, methods, ids)
