"""Tables 4 and 6 and the summaries behind Figures 3 / 4, from evaluation records
(docs/method.md §6-§7): probability change ratio (PCR) and knowledge-editing flip rates, with the
paper's values beside ours. Free of torch (the records are read by `qrnca.evaluation.records`).

Division by zero is not hidden: a change with mean(p0) = 0 and a PCR with change_unrelated = 0
follow IEEE arithmetic (x / 0 = inf, 0 / 0 = NaN), written as `inf` / `NaN` in tables.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..evaluation.records import OPS, PCR_AVERAGES, SETS, not_applicable_of
from ..neurons.methods import METHODS
from . import paper_values

#: Columns of Tables 4 and 6, in order (`note`: why a method does not apply, else empty).
TABLE4_COLUMNS = ("dataset", "method", "op", "change_related", "change_unrelated", "pcr",
                  "paper_pcr", "diff", "n_related", "n_unrelated", "pcr_average", "note")
TABLE6_COLUMNS = ("dataset", "method", "op", "flip_rate", "n", "subset", "flip_rate_subset",
                  "n_subset", "paper_flip_rate", "paper_upper_bound", "diff", "note")


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


def _beside_paper(results: Mapping[tuple[str, str], object], columns: Sequence[str],
                  paper_datasets: Mapping[str, str | None] | None, rows_of) -> pd.DataFrame:
    """The rows `rows_of(dataset, method, frame, paper dataset key)` gives per result, in
    `_results_items` order, and the not-applicable rows of methods that do not apply."""
    rows = []
    for dataset, method, frame, reason in _results_items(results):
        if reason:
            rows += _not_applicable_rows(dataset, method, reason, columns)
        else:
            rows += rows_of(dataset, method, frame, _paper_key(dataset, paper_datasets))
    return pd.DataFrame(rows, columns=list(columns))


def table4(results: Mapping[tuple[str, str], object], pcr_average: str = "ratio_of_means",
           paper: Mapping | None = None,
           paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Table 4: PCR per dataset, method and op, with the paper's value and ours minus the paper's.

    `results`: {(dataset, method): evaluation records or DataFrame}. `paper`: the paper's table
    ({method: {paper dataset: {op: value}}}; default `qrnca.outputs.paper_values.TABLE4`).
    `paper_datasets`: our dataset name -> the paper's (`domain` / `language`); by default a dataset
    named `domain` or `language` is compared and any other gets NaN. Methods the paper did not run
    (`logprob_increase`) get NaN."""
    if paper is None:
        paper = paper_values.TABLE4

    def rows_of(dataset, method, frame, key):
        for _, r in pcr_summary(frame, pcr_average).iterrows():
            value = paper.get(method, {}).get(key, {}).get(r["op"]) if key else None
            paper_pcr = float("nan") if value is None else float(value)
            yield {"dataset": dataset, "method": method, "op": r["op"],
                   "change_related": r["change_related"],
                   "change_unrelated": r["change_unrelated"], "pcr": r["pcr"],
                   "paper_pcr": paper_pcr, "diff": r["pcr"] - paper_pcr,
                   "n_related": r["n_related"], "n_unrelated": r["n_unrelated"],
                   "pcr_average": pcr_average, "note": ""}

    frame = _beside_paper(results, TABLE4_COLUMNS, paper_datasets, rows_of)
    frame["pcr_average"] = pcr_average
    return frame


def table6(results: Mapping[tuple[str, str], object], paper: Mapping | None = None,
           paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Table 6: flip rate (percent of related prompts) per dataset, method and op, with the
    paper's value (or its upper bound where the paper gives only "<= x") and ours minus the
    paper's value. The subset rate is over prompts initially wrong (boost) or right (suppress)."""
    if paper is None:
        paper = paper_values.TABLE6

    def rows_of(dataset, method, frame, key):
        for _, r in flip_summary(frame).iterrows():
            cell = paper.get(method, {}).get(key, {}).get(r["op"]) if key else None
            cell = cell if isinstance(cell, Mapping) else {"value": cell, "upper_bound": None}
            value = float("nan") if cell.get("value") is None else float(cell["value"])
            bound = float("nan") if cell.get("upper_bound") is None else float(cell["upper_bound"])
            subset = "initially_wrong" if r["op"] == "boost" else "initially_right"
            yield {"dataset": dataset, "method": method, "op": r["op"],
                   "flip_rate": r["flip_rate"], "n": r["n"], "subset": subset,
                   "flip_rate_subset": r[f"flip_rate_{subset}"],
                   "n_subset": r[f"n_{subset}"],
                   "paper_flip_rate": value, "paper_upper_bound": bound,
                   "diff": r["flip_rate"] - value, "note": ""}

    return _beside_paper(results, TABLE6_COLUMNS, paper_datasets, rows_of)
