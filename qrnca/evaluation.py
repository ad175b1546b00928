"""Evaluation of neuron sets by intervention: probability change ratio (Table 4) and knowledge
editing flips (Table 6), docs/method.md §6-§7.

For every query and every neuron method, the query's neurons are boosted (x 2) and suppressed
(x 0) at the last position of (a) its own three prompts (*related*) and (b) a control group of
prompts drawn from queries of OTHER groups (*unrelated*). Each prompt's gold-letter probability
before (p0) and after (p1) is recorded, with the predicted letter (argmax over A-D) before and
after.

The work is organised per PROMPT: every (method, query, op) row that touches a prompt is collected
first, so each prompt's prefix is computed once for all methods and evaluated as one batch of
single-token rows (`qrnca.interventions.SharedPrefix`).

Decisions (config options, written to `evaluation/settings.json` beside the records):
- `unrelated_prompts` (default 3, the related count): unrelated prompts per query, drawn uniformly
  without replacement from the prompts of all queries of other groups (pool sorted by query id and
  prompt index), seeded per (seed, query id) through a hash, so a query's draw does not depend on
  file order or processing order, and is the same for every method (paired comparison).
- `unrelated_draws` (default 1): multiplier on that count (a larger control group).
- `pcr_average` (default `ratio_of_means`): change = mean(p1 - p0) / mean(p0) over the prompts, as
  in Dai et al.'s evaluation code; `mean_of_ratios`: mean((p1 - p0) / p0).
Division by zero is not hidden: a change with mean(p0) = 0 and a PCR with change_unrelated = 0
follow IEEE arithmetic (x / 0 = inf, 0 / 0 = NaN), written as `inf` / `NaN` in tables.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .datasets.render import derive_rng
from .errors import InputError, NonFiniteError
from .interventions import CLEAN, OPS, Edit, SharedPrefix
from .io import read_jsonl, write_json, write_jsonl
from . import methods
from .methods import METHODS
from .models import PromptEncoding

PCR_AVERAGES = ("ratio_of_means", "mean_of_ratios")
#: Columns of Tables 4 and 6, in order (`note`: why a method does not apply, else empty).
TABLE4_COLUMNS = ("dataset", "method", "op", "change_related", "change_unrelated", "pcr",
                  "paper_pcr", "diff", "n_related", "n_unrelated", "pcr_average", "note")
TABLE6_COLUMNS = ("dataset", "method", "op", "flip_rate", "n", "subset", "flip_rate_subset",
                  "n_subset", "paper_flip_rate", "paper_upper_bound", "diff", "note")
SETS = ("related", "unrelated")
SETTINGS_FILE = "settings.json"
#: Settings the evaluation records depend on (`settings.json`); `chunk_size` only changes how the
#: rows are batched and `pcr_average` only how Tables 4 and Figs. 3/4 average them.
RESULT_SETTINGS = ("unrelated_prompts", "unrelated_draws", "seed", "ops")
#: Run statistics that depend on the machine or the chunk size: provenance, not settings.json.
TIMING_STATS = ("seconds", "seconds_per_prompt")
EXECUTION_STATS = ("single_token_passes",) + TIMING_STATS

Neuron = tuple[int, int]


@dataclass(frozen=True)
class EvaluationSettings:
    """The decisions of an evaluation run (module docstring)."""

    unrelated_prompts: int = 3
    unrelated_draws: int = 1
    seed: int = 0
    ops: tuple[str, ...] = ("boost", "suppress")
    chunk_size: int = 64
    pcr_average: str = "ratio_of_means"

    def __post_init__(self):
        if self.unrelated_prompts < 1 or self.unrelated_draws < 1:
            raise InputError(f"unrelated_prompts ({self.unrelated_prompts}) and unrelated_draws "
                             f"({self.unrelated_draws}) must be >= 1")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise InputError(f"ops must be a non-empty subset of {sorted(OPS)}, got {self.ops!r}")
        if self.pcr_average not in PCR_AVERAGES:
            raise InputError(f"pcr_average must be one of {PCR_AVERAGES}, got {self.pcr_average!r}")
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        object.__setattr__(self, "ops", tuple(self.ops))

    @classmethod
    def from_config(cls, config: Mapping | None) -> "EvaluationSettings":
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown evaluation settings {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**config)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ops"] = list(self.ops)
        out["factors"] = {op: OPS[op] for op in self.ops}
        return out

    def result_dict(self) -> dict:
        """The settings the records depend on (`RESULT_SETTINGS`), with the factors."""
        full = self.as_dict()
        return {**{k: full[k] for k in RESULT_SETTINGS}, "factors": full["factors"]}


# --------------------------------------------------------------------------------------------
# Inputs


def neuron_sets(records: Sequence[Mapping], queries: Sequence[Mapping],
                source: str = "neurons") -> dict[str, tuple[Neuron, ...]]:
    """{query id: neurons} from a neurons file's records, checked against the dataset: every query
    exactly once, no unknown ids, groups equal, neurons as [layer, index] integer pairs."""
    groups = {q["id"]: q["group"] for q in queries}
    out: dict[str, tuple[Neuron, ...]] = {}
    for row, record in enumerate(records, start=1):
        qid = record.get("id") if isinstance(record, Mapping) else None
        where = f"{source}, row {row} (id {qid!r})"
        if qid not in groups:
            raise InputError(f"{where}: query id not in the dataset")
        if qid in out:
            raise InputError(f"{where}: duplicate query id")
        if record.get("group") != groups[qid]:
            raise InputError(f"{where}: group {record.get('group')!r} differs from the dataset's "
                             f"{groups[qid]!r}")
        neurons = record.get("neurons")
        if not isinstance(neurons, list) or not all(
                isinstance(n, (list, tuple)) and len(n) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in n) for n in neurons):
            raise InputError(f"{where}: 'neurons' must be a list of [layer, index] integer pairs")
        out[qid] = tuple((n[0], n[1]) for n in neurons)
    missing = [qid for qid in groups if qid not in out]
    if missing:
        raise InputError(f"{source}: {len(missing)} dataset queries have no neuron record, "
                         f"e.g. {missing[:3]}")
    return out


def unrelated_prompts(query: Mapping, queries: Sequence[Mapping],
                      settings: EvaluationSettings) -> list[tuple[str, int]]:
    """The control prompts of `query`: (query id, prompt index) pairs drawn uniformly without
    replacement from the prompts of queries of other groups (sorted by id, prompt index), seeded
    by (seed, query id)."""
    pool = sorted((q["id"], k) for q in queries if q["group"] != query["group"]
                  for k in range(len(q["prompts"])))
    count = settings.unrelated_prompts * settings.unrelated_draws
    if count > len(pool):
        raise InputError(f"query {query['id']!r}: {count} unrelated prompts requested but only "
                         f"{len(pool)} prompts belong to other groups")
    rng = derive_rng(settings.seed, "unrelated", query["id"])
    return rng.sample(pool, count)


# --------------------------------------------------------------------------------------------
# Running the interventions


@dataclass
class EvaluationRun:
    """Per-method records (the lines of `evaluation/{method}.jsonl`) and run statistics."""

    records: dict[str, list[dict]]
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    method: str
    query: int  # index in the dataset
    op: str
    set: str


def evaluate(model, tokenizer, queries: Sequence[Mapping],
             neurons: Mapping[str, Mapping[str, Sequence[Neuron]]],
             settings: EvaluationSettings = EvaluationSettings(),
             encoding: PromptEncoding = PromptEncoding(),
             not_applicable: Mapping[str, str] | None = None,
             progress: bool = True) -> EvaluationRun:
    """Boost / suppress each method's neurons on related and unrelated prompts.

    `neurons`: {method: {query id: [(layer, index), ...]}} (see `neuron_sets`). Returns one record
    per (method, query, op, set, prompt) in the order dataset query, op, set (related first),
    prompt (the query's own prompts in template order; unrelated prompts in draw order).
    `not_applicable`: {method: reason} of methods that do not apply to this model; each gets the
    single record that says so (`qrnca.methods`).
    """
    from tqdm.auto import tqdm

    if not neurons:
        raise InputError("no neuron methods to evaluate")
    queries = list(queries)
    index = {q["id"]: i for i, q in enumerate(queries)}
    letter_ids = encoding.letters(tokenizer)
    controls = [unrelated_prompts(q, queries, settings) for q in queries]

    # Every row that touches each prompt, keyed by (query index, prompt index).
    touching: dict[tuple[int, int], list[tuple[_Row, int]]] = {}
    for method in neurons:
        for qi, query in enumerate(queries):
            for op in settings.ops:
                for k in range(len(query["prompts"])):
                    touching.setdefault((qi, k), []).append((_Row(method, qi, op, "related"), k))
                for order, (pid, pk) in enumerate(controls[qi]):
                    touching.setdefault((index[pid], pk), []).append(
                        (_Row(method, qi, op, "unrelated"), order))

    # One Edit per (method, query, op), shared by every prompt it touches.
    edit_of = {(method, qi, op): Edit.of(neurons[method][query["id"]], OPS[op])
               for method in neurons for qi, query in enumerate(queries) for op in settings.ops}
    records: dict[str, list[tuple[tuple, dict]]] = {m: [] for m in neurons}
    op_rank = {op: i for i, op in enumerate(settings.ops)}
    rows_total = passes = 0
    started = time.perf_counter()
    prompts = sorted(touching)
    for qi, k in tqdm(prompts, desc="evaluation prompts", disable=not progress):
        query = queries[qi]
        gold = query["answers"][k]
        rows = touching[(qi, k)]
        edits = [CLEAN] + [edit_of[(r.method, r.query, r.op)] for r, _ in rows]
        ids = encoding.ids(tokenizer, query["prompts"][k])
        result = SharedPrefix(model, ids).letter_probabilities(
            edits, letter_ids, gold=gold, chunk_size=settings.chunk_size)
        rows_total += len(edits)
        passes += -(-result.distinct_rows // settings.chunk_size)
        p = result.gold_probs
        predicted = result.predicted
        for j, (row, order) in enumerate(rows, start=1):
            owner = queries[row.query]
            record = {
                "id": owner["id"], "group": owner["group"], "op": row.op,
                "factor": OPS[row.op], "set": row.set, "n_neurons": len(edits[j].neurons),
                "prompt_id": query["id"], "prompt_group": query["group"], "prompt_index": k,
                "gold": gold, "p0": float(p[0]), "p1": float(p[j]),
                "predicted_before": predicted[0], "predicted_after": predicted[j],
            }
            key = (row.query, op_rank[row.op], SETS.index(row.set), order)
            records[row.method].append((key, record))
    seconds = time.perf_counter() - started
    stats = {"queries": len(queries), "methods": list(neurons), "prompts": len(prompts),
             "rows": rows_total, "single_token_passes": passes,
             "prefix_passes": len(prompts), "seconds": round(seconds, 3),
             "seconds_per_prompt": round(seconds / max(len(prompts), 1), 5)}
    ordered = {m: [rec for _, rec in sorted(recs, key=lambda kr: kr[0])]
               for m, recs in records.items()}
    for method, reason in (not_applicable or {}).items():
        ordered[method] = [methods.not_applicable(reason)]
    return EvaluationRun(ordered, stats)


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


def write_evaluation(directory: str | os.PathLike, run: EvaluationRun,
                     settings: EvaluationSettings, extra: Mapping | None = None) -> list[Path]:
    """Write `{directory}/{method}.jsonl` per method and `{directory}/settings.json` (the
    settings the records depend on, the run statistics that do not depend on the machine or the
    chunk size, and `extra`), each atomically. A non-finite probability is an error
    (`check_finite`) and nothing is written."""
    directory = Path(directory)
    for method, records in run.records.items():
        check_finite(records, f"method {method}")
    paths = []
    for method, records in run.records.items():
        path = directory / f"{method}.jsonl"
        write_jsonl(path, records)
        paths.append(path)
    stats = {k: v for k, v in run.stats.items() if k not in EXECUTION_STATS}
    write_json(directory / SETTINGS_FILE,
               {"settings": settings.result_dict(), "stats": stats, **dict(extra or {})})
    return paths


def read_evaluation(path: str | os.PathLike, query_ids: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """An evaluation file as a DataFrame (one row per record; a method that does not apply is
    one row whose `not_applicable` column holds the reason, see `not_applicable_of`). A NaN or
    infinite probability is an error naming the file and the query; with `query_ids`, the
    records must hold exactly those queries (`qrnca.consistency.check_query_ids`)."""
    from .consistency import check_query_ids

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


# --------------------------------------------------------------------------------------------
# Probability change ratio (Table 4, Figures 3 / 4)


def _frame(records: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(list(records))
    needed = {"id", "group", "op", "set", "gold", "p0", "p1", "predicted_before", "predicted_after"}
    missing = needed - set(frame.columns)
    if missing:
        raise InputError(f"evaluation records lack columns {sorted(missing)}")
    return frame


def probability_change(p0: np.ndarray, p1: np.ndarray, how: str = "ratio_of_means") -> float:
    """mean(p1 - p0) / mean(p0) (`ratio_of_means`) or mean((p1 - p0) / p0) (`mean_of_ratios`).
    Empty input gives NaN; a zero denominator gives inf / NaN (IEEE), never an exception."""
    p0 = np.asarray(p0, dtype=float)
    p1 = np.asarray(p1, dtype=float)
    if how not in PCR_AVERAGES:
        raise InputError(f"pcr_average must be one of {PCR_AVERAGES}, got {how!r}")
    if p0.size == 0:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        if how == "ratio_of_means":
            return float(np.float64(np.mean(p1 - p0)) / np.float64(np.mean(p0)))
        return float(np.mean((p1 - p0) / p0))


def ratio(numerator: float, denominator: float) -> float:
    """|numerator| / |denominator| with x / 0 = inf and 0 / 0 = NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.abs(np.float64(numerator)) / np.abs(np.float64(denominator)))


def pcr_summary(records, pcr_average: str = "ratio_of_means",
                by: Sequence[str] = ()) -> pd.DataFrame:
    """Related and unrelated probability change and PCR = |related| / |unrelated| per op (and per
    the `by` columns, e.g. `("group",)` for Figures 3 / 4: a group's related prompts and the
    unrelated prompts its queries' neurons were applied to)."""
    frame = _frame(records)
    keys = ["op", *by]
    rows = []
    for values, part in frame.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values))
        for s in SETS:
            sub = part[part["set"] == s]
            row[f"change_{s}"] = probability_change(sub["p0"], sub["p1"], pcr_average)
            row[f"n_{s}"] = len(sub)
        row["pcr"] = ratio(row["change_related"], row["change_unrelated"])
        row["queries"] = part["id"].nunique()
        rows.append(row)
    columns = keys + ["change_related", "change_unrelated", "pcr", "n_related", "n_unrelated",
                      "queries"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# Knowledge editing (Table 6)


def _rate(mask: pd.Series) -> float:
    return float(100.0 * mask.mean()) if len(mask) else float("nan")


def flip_summary(records, by: Sequence[str] = ()) -> pd.DataFrame:
    """Share (percent) of RELATED prompts whose predicted option changes, per op (and `by`).

    Also over the prompts initially wrong (prediction before != gold; the subset that boosting
    could repair) and initially right (the subset suppression could break), with `to_gold` = the
    share of initially wrong prompts that end on the gold letter."""
    frame = _frame(records)
    frame = frame[frame["set"] == "related"]
    keys = ["op", *by]
    rows = []
    for values, part in frame.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        flipped = part["predicted_after"] != part["predicted_before"]
        right = part["predicted_before"] == part["gold"]
        wrong = ~right
        rows.append({
            **dict(zip(keys, values)),
            "flip_rate": _rate(flipped), "n": len(part),
            "flip_rate_initially_wrong": _rate(flipped[wrong]), "n_initially_wrong": int(wrong.sum()),
            "flip_rate_initially_right": _rate(flipped[right]), "n_initially_right": int(right.sum()),
            "to_gold_rate_initially_wrong": _rate((part["predicted_after"] == part["gold"])[wrong]),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Tables with the paper's values beside ours


def _paper_tables():
    try:
        from . import paper_values
    except ImportError:  # pragma: no cover - the module is part of the package
        return {}, {}
    return getattr(paper_values, "TABLE4", {}), getattr(paper_values, "TABLE6", {})


def _method_order(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [m for m in METHODS if m in names] + [m for m in names if m not in METHODS]


def _paper_key(dataset: str, paper_datasets: Mapping[str, str | None] | None) -> str | None:
    if paper_datasets is not None:
        return paper_datasets.get(dataset)
    return dataset if dataset in ("domain", "language") else None


def _results_items(results: Mapping[tuple[str, str], object]):
    """(dataset, method, frame, None) per result, or (dataset, method, None, reason) for a method
    that does not apply."""
    datasets = list(dict.fromkeys(d for d, _ in results))
    for dataset in datasets:
        for method in _method_order(m for d, m in results if d == dataset):
            result = results[(dataset, method)]
            frame = result if isinstance(result, pd.DataFrame) else pd.DataFrame.from_records(list(result))
            reason = not_applicable_of(frame)
            yield dataset, method, (None if reason else _frame(frame)), reason


def _not_applicable_rows(dataset: str, method: str, reason: str, columns: Sequence[str]) -> list[dict]:
    """One row per op for a method that does not apply: NaN values, the reason in `note`."""
    rows = []
    for op in OPS:
        row = {c: float("nan") for c in columns}
        row.update({"dataset": dataset, "method": method, "op": op, "note": f"not applicable: {reason}"})
        rows.append(row)
    return rows


def table4(results: Mapping[tuple[str, str], object], pcr_average: str = "ratio_of_means",
           paper: Mapping | None = None,
           paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Table 4: PCR per dataset, method and op, with the paper's value and ours minus the paper's.

    `results`: {(dataset, method): evaluation records or DataFrame}. `paper`: the paper's table
    ({method: {paper dataset: {op: value}}}; default `qrnca.paper_values.TABLE4`).
    `paper_datasets`: our dataset name -> the paper's (`domain` / `language`); by default a dataset
    named `domain` or `language` is compared and any other gets NaN. Methods the paper did not run
    (`logprob_increase`) get NaN."""
    if paper is None:
        paper = _paper_tables()[0]
    rows = []
    for dataset, method, frame, reason in _results_items(results):
        if reason:
            rows += _not_applicable_rows(dataset, method, reason, TABLE4_COLUMNS)
            continue
        key = _paper_key(dataset, paper_datasets)
        for _, r in pcr_summary(frame, pcr_average).iterrows():
            value = paper.get(method, {}).get(key, {}).get(r["op"]) if key else None
            paper_pcr = float("nan") if value is None else float(value)
            rows.append({"dataset": dataset, "method": method, "op": r["op"],
                         "change_related": r["change_related"],
                         "change_unrelated": r["change_unrelated"], "pcr": r["pcr"],
                         "paper_pcr": paper_pcr, "diff": r["pcr"] - paper_pcr,
                         "n_related": r["n_related"], "n_unrelated": r["n_unrelated"],
                         "pcr_average": pcr_average, "note": ""})
    frame = pd.DataFrame(rows, columns=list(TABLE4_COLUMNS))
    frame["pcr_average"] = pcr_average
    return frame


def table6(results: Mapping[tuple[str, str], object], paper: Mapping | None = None,
           paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Table 6: flip rate (percent of related prompts) per dataset, method and op, with the
    paper's value (or its upper bound where the paper gives only "<= x") and ours minus the
    paper's value. The subset rate is over prompts initially wrong (boost) or right (suppress)."""
    if paper is None:
        paper = _paper_tables()[1]
    rows = []
    for dataset, method, frame, reason in _results_items(results):
        if reason:
            rows += _not_applicable_rows(dataset, method, reason, TABLE6_COLUMNS)
            continue
        key = _paper_key(dataset, paper_datasets)
        for _, r in flip_summary(frame).iterrows():
            cell = paper.get(method, {}).get(key, {}).get(r["op"]) if key else None
            cell = cell if isinstance(cell, Mapping) else {"value": cell, "upper_bound": None}
            value = float("nan") if cell.get("value") is None else float(cell["value"])
            bound = float("nan") if cell.get("upper_bound") is None else float(cell["upper_bound"])
            subset = "initially_wrong" if r["op"] == "boost" else "initially_right"
            rows.append({"dataset": dataset, "method": method, "op": r["op"],
                         "flip_rate": r["flip_rate"], "n": r["n"], "subset": subset,
                         "flip_rate_subset": r[f"flip_rate_{subset}"],
                         "n_subset": r[f"n_{subset}"],
                         "paper_flip_rate": value, "paper_upper_bound": bound,
                         "diff": r["flip_rate"] - value, "note": ""})
    return pd.DataFrame(rows, columns=list(TABLE6_COLUMNS))
