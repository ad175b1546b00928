"""Figures 3 and 4: related vs unrelated probability change per group (domain or language).

One figure per (dataset, op): for each group, two bars — the change of the gold-letter
probability on the group's own prompts (related) and on the control prompts of other groups
(unrelated) when the group's queries' neurons are boosted or suppressed. The input is
`qrnca.outputs.evaluation_tables.pcr_summary(records, by=("group",))`. Drawn on a
`matplotlib.figure.Figure` (Agg, no pyplot state) and written by `qrnca.outputs.plots.save_figure`, like every other figure:
atomically, at the config's dpi, without creation dates.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import InputError
from .plots import DEFAULT_DPI, save_figure

OP_TITLES = {"boost": "Boosting", "suppress": "Suppressing"}
SET_LABELS = {"related": "related prompts", "unrelated": "unrelated prompts"}
PALETTE = {"related prompts": "#c0392b", "unrelated prompts": "#7f8c8d"}


def group_change_frame(by_group: pd.DataFrame, op: str,
                       groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Long form (group, set, change in percent) of one op's rows of a per-group PCR summary."""
    needed = {"op", "group", "change_related", "change_unrelated"}
    if not needed <= set(by_group.columns):
        raise InputError(f"per-group summary lacks columns {sorted(needed - set(by_group.columns))}")
    part = by_group[by_group["op"] == op]
    if part.empty:
        raise InputError(f"no rows for op {op!r} in the per-group summary")
    order = list(groups) if groups is not None else list(dict.fromkeys(part["group"]))
    long = part.melt(id_vars=["group"], value_vars=["change_related", "change_unrelated"],
                     var_name="set", value_name="change")
    long["set"] = long["set"].str.removeprefix("change_").map(SET_LABELS)
    long["change"] = 100.0 * long["change"]
    long["group"] = pd.Categorical(long["group"], categories=order, ordered=True)
    return long.sort_values(["group", "set"]).reset_index(drop=True)


def plot_group_changes(by_group: pd.DataFrame, op: str, title: str | None = None,
                       groups: Sequence[str] | None = None):
    """A matplotlib Figure of related vs unrelated probability change per group for `op`."""
    with _style():
        return _draw(group_change_frame(by_group, op, groups), op, title)


def _style():
    """The figures' seaborn style, as a context (the global theme is left alone)."""
    style = sns.axes_style("whitegrid")
    context = sns.plotting_context("paper")
    return matplotlib.rc_context({**style, **context})


def _draw(data: pd.DataFrame, op: str, title: str | None) -> Figure:
    n_groups = data["group"].nunique()
    fig = Figure(figsize=(max(4.0, 0.9 * n_groups + 1.5), 3.2))
    ax = fig.subplots()
    sns.barplot(data=data, x="group", y="change", hue="set", palette=PALETTE, ax=ax,
                hue_order=list(PALETTE))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("probability change (%)")
    ax.set_title(title or f"{OP_TITLES.get(op, op)} query-relevant neurons", fontsize=10,
                 pad=22)
    # Two significant digits: a fixed "%.1f" shows small changes (a confident model) as "-0.0".
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2g", fontsize=7, padding=2)
    ax.margins(y=0.12)
    # Legend in its own row between the title and the axes, so it never covers a bar.
    sns.move_legend(ax, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None,
                    frameon=False, fontsize=8, borderaxespad=0.1)
    ax.set_xticks(range(n_groups), [textwrap.fill(str(g).replace("_", " "), 12)
                                    for g in data["group"].cat.categories])
    fig.tight_layout()
    return fig


def save_group_changes(by_group: pd.DataFrame, op: str, paths: Sequence[str | os.PathLike],
                       title: str | None = None, groups: Sequence[str] | None = None,
                       dpi: int = DEFAULT_DPI) -> list[Path]:
    """Figure 3 / 4 for one (dataset, op), written to every path in `paths` (e.g. .pdf and .png)
    by `qrnca.outputs.plots.save_figure`."""
    with _style():
        return save_figure(plot_group_changes(by_group, op, title, groups), paths, dpi=dpi)
