"""Every number the paper reports beside ours: one row per paper number, per model.

`paper_comparison` takes the tables a run produced (the DataFrames of `qrnca.outputs.analysis.table3`,
`qrnca.outputs.evaluation_tables.table4` / `table6`, `qrnca.outputs.prediction_table.table7` and the Fig. 2a overlap) and walks
the paper's numbers (`qrnca.outputs.paper_values`), so that nothing the paper reports is silently left
out and nothing is invented:

- a paper number whose counterpart the run produced: `compared`, with ours, and the difference
  ours − paper;
- a paper number given only as a bound ("≤ 0.3" in Table 6): `within bound` / `above bound`, no
  difference (a bound is not a value);
- Fig. 2a's highest pair: `same pair` / `different pair` (unordered), or `no pair (fewer than 2
  groups)`;
- a paper number the run did not produce (a dataset, method, group or table missing): `not
  produced`, ours empty;
- a number of ours with no paper counterpart (a dataset that is not the paper's — the demo world's
  `demo-domain`, whose groups may even be called "biology" —, a method or group the paper did not
  report): `no paper counterpart`, never set beside a paper number.

Which of our datasets stand for the paper's `domain` and `language` datasets is the
`paper_datasets` mapping (default: datasets named `domain` and `language`). The paper's numbers
are for Llama-2-7B-chat (`paper_values.MODEL`); a row for another model compares against those
same numbers and says so in `paper_model`.

Inputs, per model, {table name: DataFrame} (names `TABLES`); the columns read are:

| table | columns |
|---|---|
| `table3` | `dataset, group, mean_neurons` (the Table 3 CSV; group `ALL` is the overall mean) |
| `table4` | `dataset, method, op, pcr` (optional `pcr_average`) |
| `table6` | `dataset, method, op, flip_rate` (percent) |
| `table7` | `dataset, group, neuron_based, prompt_based` (group `ALL` has no paper value) |
| `fig2a` | long form `dataset, group_a, group_b` + one value column (`jaccard`, `overlap_coefficient` or `overlap`) |

`table3` and `fig2a` may also be given as {dataset: DataFrame} (Table 3 frames without a
`dataset` column; Fig. 2a as group × group overlap matrices).
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Mapping, Sequence

import pandas as pd

from .. import io
from ..errors import InputError
from . import paper_values

TABLES = ("table3", "table4", "table6", "table7", "fig2a")
TITLES = {
    "table3": "Table 3: mean number of QR neurons per query",
    "table4": "Table 4: probability change ratio (PCR), boost / suppress",
    "table6": "Table 6: knowledge editing, % of prompts whose predicted option flips",
    "table7": "Table 7: neuron-based vs prompt-based accuracy on held-out questions",
    "fig2a": "Fig. 2a: overlap of QR-neuron sets between groups (off-diagonal)",
}
COLUMNS = ("model", "table", "dataset", "item", "paper", "ours", "difference", "status",
           "paper_value", "paper_upper_bound", "ours_value", "paper_model", "note")
COMPARED, WITHIN, ABOVE = "compared", "within bound", "above bound"
SAME_PAIR, OTHER_PAIR, NO_PAIR = "same pair", "different pair", "no pair (fewer than 2 groups)"
NOT_PRODUCED, NO_COUNTERPART = "not produced", "no paper counterpart"
OVERLAP_COLUMNS = ("jaccard", "overlap_coefficient", "overlap")
DEFAULT_PAPER_DATASETS = {"domain": "domain", "language": "language"}
PAIR_SEP = "–"


# --------------------------------------------------------------------------------------------
# The paper's numbers, as (paper dataset, item, value, upper bound, display)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def _paper_items(table: str) -> list[tuple[str, str, float | None, float | None, str]]:
    items = []
    if table == "table3":
        for ds, data in paper_values.TABLE3.items():
            for group, value in data["groups"].items():
                items.append((ds, group, value, None, f"{value:g}"))
            if data["overall"] is not None:
                items.append((ds, "overall", data["overall"], None, f"{data['overall']:g}"))
    elif table == "table4":
        for ds in ("domain", "language"):
            for method, cells in paper_values.TABLE4.items():
                for op, value in cells.get(ds, {}).items():
                    items.append((ds, f"{method} / {op}", value, None, f"{value:g}"))
    elif table == "table6":
        for ds in ("domain", "language"):
            for method, cells in paper_values.TABLE6.items():
                for op, cell in cells.get(ds, {}).items():
                    value, bound = cell.get("value"), cell.get("upper_bound")
                    display = f"{value:g}" if value is not None else f"≤ {bound:g}"
                    items.append((ds, f"{method} / {op}", value, bound, display))
    elif table == "table7":
        for group, cell in paper_values.TABLE7.items():
            for kind in ("neuron_based", "prompt_based"):
                items.append(("domain", f"{group} / {kind}", cell[kind], None, f"{cell[kind]:g}"))
    elif table == "fig2a":
        for ds, data in paper_values.FIG2A.items():
            low, high = data["range"]
            items.append((ds, "min off-diagonal", low, None, f"{low:g}"))
            items.append((ds, "max off-diagonal", high, None, f"{high:g}"))
            items.append((ds, "highest pair", None, None, PAIR_SEP.join(data["highest_pair"])))
    return items


# --------------------------------------------------------------------------------------------
# Our numbers, as {(our dataset, item): (value, display, note)}


def need_columns(frame, columns: Iterable[str], where: str) -> pd.DataFrame:
    """`frame` itself when it is a DataFrame with `columns`; an error naming `where` otherwise."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{where}: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: missing columns {missing} (has {list(frame.columns)})")
    return frame


def model_table_items(model_tables: Mapping[str, Mapping[str, object]], known: Sequence[str]):
    """(model, its {table name: table}) per model, each checked to be a mapping of `known` table
    names; an error names the model otherwise."""
    for model, tables in model_tables.items():
        if not isinstance(tables, Mapping):
            raise InputError(f"model {model!r}: expected {{table name: table}}")
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise InputError(f"model {model!r}: unknown tables {unknown}; known: {list(known)}")
        yield model, tables


def _with_dataset(obj, where: str) -> pd.DataFrame:
    """A frame with a `dataset` column from a frame that has one or from {dataset: frame}."""
    if isinstance(obj, Mapping):
        frames = [need_columns(f, (), f"{where} [{ds}]").assign(dataset=ds) for ds, f in obj.items()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset"])
    frame = need_columns(obj, (), where)
    if "dataset" not in frame.columns:
        raise InputError(f"{where}: no 'dataset' column; give {{dataset: DataFrame}} or add the "
                         "column (a table is compared with the paper only for the paper's datasets)")
    return frame


Ours = dict[tuple[str, str], tuple[float, str, str]]


def number_or_nan(value) -> float:
    """A table cell as a float; NaN for an empty or non-numeric cell (e.g. "not applicable")."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ours_table3(obj, where: str) -> Ours:
    frame = need_columns(_with_dataset(obj, where), ("dataset", "group", "mean_neurons"), where)
    out: Ours = {}
    for _, r in frame.iterrows():
        item = "overall" if r["group"] == "ALL" else str(r["group"])
        v = number_or_nan(r["mean_neurons"])
        note = "overall: unweighted mean of the group means" if item == "overall" else ""
        out[(str(r["dataset"]), item)] = (v, _fmt(v), note)
    return out


def _ours_methods(obj, where: str, column: str) -> Ours:
    frame = need_columns(obj, ("dataset", "method", "op", column), where)
    out: Ours = {}
    for _, r in frame.iterrows():
        v = number_or_nan(r[column])
        note = ""
        if column == "pcr" and "pcr_average" in frame.columns and r["pcr_average"] != "ratio_of_means":
            note = f"pcr_average={r['pcr_average']} (the paper's evaluation: ratio of means)"
        out[(str(r["dataset"]), f"{r['method']} / {r['op']}")] = (v, _fmt(v), note)
    return out


def _ours_table7(obj, where: str) -> Ours:
    frame = need_columns(obj, ("dataset", "group", "neuron_based", "prompt_based"), where)
    out: Ours = {}
    for _, r in frame.iterrows():
        for kind in ("neuron_based", "prompt_based"):
            v = number_or_nan(r[kind])
            out[(str(r["dataset"]), f"{r['group']} / {kind}")] = (
                v, _fmt(v), "reconstructed decision rule (docs/method.md §7)" if kind == "neuron_based" else "")
    return out


def overlap_matrices(obj, where: str = "fig2a") -> dict[str, tuple[pd.DataFrame, str]]:
    """{dataset: (group × group overlap matrix, measure name)} from the long-form Fig. 2a table
    (`dataset, group_a, group_b` + one of `OVERLAP_COLUMNS`) or from {dataset: matrix} (measure
    taken to be `jaccard`, the default of `analysis.overlap`)."""
    if isinstance(obj, Mapping):
        return {str(ds): (need_columns(m, (), f"{where} [{ds}]"), "jaccard") for ds, m in obj.items()}
    frame = need_columns(obj, ("dataset", "group_a", "group_b"), where)
    value_cols = [c for c in OVERLAP_COLUMNS if c in frame.columns]
    if len(value_cols) != 1:
        raise InputError(f"{where}: expected exactly one overlap column of {OVERLAP_COLUMNS}, "
                         f"found {value_cols}")
    col = value_cols[0]
    out = {}
    for ds, part in frame.groupby("dataset", sort=False):
        matrix = part.pivot(index="group_a", columns="group_b", values=col)
        order = list(dict.fromkeys(part["group_a"]))
        out[str(ds)] = (matrix.reindex(index=order, columns=order), col)
    return out


def overlap_range(matrix: pd.DataFrame) -> dict:
    """Min and max of the off-diagonal overlaps of a group × group matrix and the highest pair
    (first in row order on ties). Fewer than two groups: NaNs and no pair."""
    groups = list(matrix.index)
    values = matrix.reindex(columns=groups).to_numpy(dtype=float)
    pairs = [(values[i, j], groups[i], groups[j]) for i in range(len(groups))
             for j in range(i + 1, len(groups))]
    if not pairs:
        return {"min": math.nan, "max": math.nan, "highest_pair": None}
    best = max(pairs, key=lambda p: p[0])  # max() keeps the first maximum
    return {"min": float(min(p[0] for p in pairs)), "max": float(best[0]),
            "highest_pair": (best[1], best[2])}


def _ours_fig2a(obj, where: str) -> Ours:
    out: Ours = {}
    for ds, (matrix, measure) in overlap_matrices(obj, where).items():
        summary = overlap_range(matrix)
        note = f"measure: {measure}"
        out[(ds, "min off-diagonal")] = (summary["min"], _fmt(summary["min"]), note)
        out[(ds, "max off-diagonal")] = (summary["max"], _fmt(summary["max"]), note)
        pair = summary["highest_pair"]
        out[(ds, "highest pair")] = (math.nan, PAIR_SEP.join(pair) if pair else "none", note)
    return out


_READERS = {
    "table3": _ours_table3,
    "table4": lambda obj, where: _ours_methods(obj, where, "pcr"),
    "table6": lambda obj, where: _ours_methods(obj, where, "flip_rate"),
    "table7": _ours_table7,
    "fig2a": _ours_fig2a,
}


# --------------------------------------------------------------------------------------------
# The comparison


def _row(model, table, dataset, item, paper="—", ours="", difference=math.nan, status="",
         paper_value=math.nan, bound=math.nan, ours_value=math.nan, note="") -> dict:
    return {"model": model, "table": table, "dataset": dataset, "item": item, "paper": paper,
            "ours": ours, "difference": difference, "status": status,
            "paper_value": math.nan if paper_value is None else paper_value,
            "paper_upper_bound": math.nan if bound is None else bound,
            "ours_value": ours_value, "paper_model": paper_values.MODEL, "note": note}


def _compare(paper_item, ours) -> tuple[float, str]:
    _, item, value, bound, display = paper_item
    ours_value, ours_display, _ = ours
    if item == "highest pair":
        if ours_display == "none":
            return math.nan, NO_PAIR
        same = set(display.split(PAIR_SEP)) == set(ours_display.split(PAIR_SEP))
        return math.nan, SAME_PAIR if same else OTHER_PAIR
    if value is None and bound is not None:
        if math.isnan(ours_value):
            return math.nan, COMPARED
        return math.nan, WITHIN if ours_value <= bound else ABOVE
    return ours_value - value, COMPARED


def paper_comparison(model_tables: Mapping[str, Mapping[str, object]], *,
                     paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """One row per paper number per model (plus our numbers without a paper counterpart).

    `model_tables`: {model name: {table name: table}} (module docstring for the columns);
    a table may be absent, and then all its paper numbers are `not produced`.
    `paper_datasets`: {our dataset: the paper's dataset (`domain` / `language`) or None};
    default `DEFAULT_PAPER_DATASETS`. Columns `COLUMNS`: `paper` / `ours` are display strings
    (`paper` "≤ 0.3" for a bound, "biology–geography" for a pair), `paper_value`,
    `paper_upper_bound`, `ours_value`, `difference` (ours − paper) the numbers behind them."""
    mapping = dict(DEFAULT_PAPER_DATASETS if paper_datasets is None else paper_datasets)
    rows = []
    for model, tables in model_table_items(model_tables, TABLES):
        for table in TABLES:
            if table in tables and tables[table] is not None:
                ours = _READERS[table](tables[table], f"model {model!r}, {table}")
            else:
                ours = {}
            used = set()
            our_datasets = list(dict.fromkeys(ds for ds, _ in ours))
            for paper_item in _paper_items(table):
                paper_ds, item, value, bound, display = paper_item
                mine = [ds for ds in our_datasets if mapping.get(ds) == paper_ds]
                if not mine:
                    why = (f"the run has no {table} table" if table not in tables else
                           f"no dataset of the run stands for the paper's {paper_ds!r}")
                    rows.append(_row(model, table, paper_ds, item, display, "", status=NOT_PRODUCED,
                                     paper_value=value, bound=bound, note=why))
                    continue
                for ds in mine:
                    if (ds, item) not in ours:
                        rows.append(_row(model, table, ds, item, display, "", status=NOT_PRODUCED,
                                         paper_value=value, bound=bound,
                                         note=f"the run's {table} has no such row"))
                        continue
                    used.add((ds, item))
                    difference, status = _compare(paper_item, ours[(ds, item)])
                    ours_value, ours_display, note = ours[(ds, item)]
                    if ds != paper_ds:
                        note = "; ".join(x for x in (f"our {ds!r} as the paper's {paper_ds!r}", note) if x)
                    rows.append(_row(model, table, ds, item, display, ours_display, difference,
                                     status, value, bound, ours_value, note))
            for key, (ours_value, ours_display, note) in ours.items():
                if key in used:
                    continue
                ds, item = key
                why = ("not one of the paper's datasets" if mapping.get(ds) is None
                       else f"the paper reports no {item!r} for {mapping[ds]!r}")
                rows.append(_row(model, table, ds, item, "—", ours_display, status=NO_COUNTERPART,
                                 ours_value=ours_value,
                                 note="; ".join(x for x in (why, note) if x)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------------------------
# Writers


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else _fmt(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown_table(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    return lines


def _listing(part: pd.DataFrame) -> str:
    chunks = []
    for (model, ds), sub in part.groupby(["model", "dataset"], sort=False):
        chunks.append(f"{model} / {ds}: " + ", ".join(sub["item"]))
    return "; ".join(chunks)


def markdown(df: pd.DataFrame) -> str:
    """The comparison as a Markdown document: one section per table, the compared numbers as a
    table, then what could not be compared and why."""
    need_columns(df, COLUMNS, "paper comparison")
    models = list(dict.fromkeys(df["model"]))
    not_produced = df[df["status"] == NOT_PRODUCED]
    no_counterpart = df[df["status"] == NO_COUNTERPART]
    compared = df[~df["status"].isin([NOT_PRODUCED, NO_COUNTERPART])]
    paper_numbers = len(df) - len(no_counterpart)
    lines = [
        "# The paper's numbers beside ours",
        "",
        f"Models of this run: {', '.join(f'`{m}`' for m in models) or 'none'}. The paper's numbers "
        f"are for {paper_values.MODEL} (Chen, Dejl & Toni, AAAI 2025); a row for another model "
        "sets its number beside those same values.",
        "",
        f"Of {paper_numbers} paper numbers (over all models), {len(compared)} were compared and "
        f"{len(not_produced)} could not be compared because this run did not produce them "
        "(a table, dataset, method or group missing; listed per section). "
        f"{len(no_counterpart)} of our numbers have no counterpart in the paper (a dataset that "
        "is not one of the paper's, such as a demo world, or a method or group the paper did not "
        "report) and are listed, not compared. Differences are ours − paper; a paper value "
        "given only as a bound (\"≤ 0.3\") is checked against the bound and has no difference.",
    ]
    for table in TABLES:
        part = df[df["table"] == table]
        if part.empty:
            continue
        lines += ["", f"## {TITLES[table]}", ""]
        shown = part[~part["status"].isin([NOT_PRODUCED, NO_COUNTERPART])]
        if not shown.empty:
            lines += _markdown_table(shown, ["model", "dataset", "item", "paper", "ours",
                                             "difference", "status", "note"])
        else:
            lines.append("No number of this table could be compared with the paper.")
        missing = part[part["status"] == NOT_PRODUCED]
        if not missing.empty:
            reasons = sorted(set(missing["note"]))
            lines += ["", f"Not produced by this run ({len(missing)}; {'; '.join(reasons)}): "
                      f"{_listing(missing)}."]
        extra = part[part["status"] == NO_COUNTERPART]
        if not extra.empty:
            lines += ["", f"No paper counterpart ({len(extra)}, not compared):", ""]
            lines += _markdown_table(extra, ["model", "dataset", "item", "ours", "note"])
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: str | os.PathLike, appendix: str = "") -> None:
    """Write `markdown(df)` atomically, followed by `appendix` (further Markdown sections, e.g.
    `qrnca.outputs.paper_claims.markdown`) after one blank line."""
    text = markdown(df)
    if appendix:
        text += "\n" + appendix.rstrip("\n") + "\n"
    with io.atomic_open(path) as fh:
        fh.write(text)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the comparison as CSV atomically (empty cells for missing numbers)."""
    need_columns(df, COLUMNS, "paper comparison")
    io.write_csv(path, df)
