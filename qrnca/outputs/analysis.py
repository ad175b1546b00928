"""CPU analyses of selected neurons: Table 3 and the data behind Figs. 2a, 2b and 5 (docs/method.md §8).

Pure functions: neurons-file rows (docs/formats.md "Neurons") or selection-extras records
("Selection extras") in, pandas DataFrames out. Plotting lives in `qrnca.outputs.plots`.

Group order is the caller's (the config's) order; when none is given it is the order in which
groups first appear in the rows, so outputs are stable (`qrnca.neurons.groups`).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..neurons.groups import group_neuron_sets, ordered_groups, row_group, row_neurons
from ..neurons.selection import Neuron
from . import paper_values

OVERLAP_MEASURES = ("jaccard", "overlap_coefficient")
OVERALL = "ALL"


# --------------------------------------------------------------------------------------------
# Table 3
# --------------------------------------------------------------------------------------------


def table3(
    qrnca_rows: Sequence[Mapping],
    groups_order: Sequence[str] | None = None,
    overall: str = "group_mean",
) -> pd.DataFrame:
    """Mean number of QR neurons per query, per group, beside the paper's Table 3.

    Columns ``group, queries, mean_neurons, paper_mean, diff`` (diff = ours − paper; NaN where
    the paper has no value for that group name). The last row, group ``ALL``, holds all queries;
    its mean is the unweighted mean of the group means (``overall="group_mean"``, which is how the
    paper's 12.9 for domains comes about: 12.88, against 12.76 weighted by queries) or the mean
    over all queries (``overall="query_mean"``). Its paper value is used only when the groups are
    exactly one paper dataset's groups. A group with no queries has mean NaN.
    """
    if overall not in ("group_mean", "query_mean"):
        raise InputError(f"overall must be 'group_mean' or 'query_mean', got {overall!r}")
    groups = ordered_groups(qrnca_rows, groups_order)
    sizes: dict[str, list[int]] = {g: [] for g in groups}
    for pos, row in enumerate(qrnca_rows):
        sizes[row_group(row, pos)].append(len(row_neurons(row, pos)))
    records = []
    for g in groups:
        paper = paper_values.table3_paper(g)
        mean = float(np.mean(sizes[g])) if sizes[g] else math.nan
        records.append(
            {
                "group": g,
                "queries": len(sizes[g]),
                "mean_neurons": mean,
                "paper_mean": math.nan if paper is None else paper,
            }
        )
    all_sizes = [n for g in groups for n in sizes[g]]
    if overall == "group_mean":
        means = [r["mean_neurons"] for r in records if r["queries"]]
        all_mean = float(np.mean(means)) if means else math.nan
    else:
        all_mean = float(np.mean(all_sizes)) if all_sizes else math.nan
    paper_all = math.nan
    for dataset in paper_values.TABLE3.values():
        if set(groups) == set(dataset["groups"]) and dataset["overall"] is not None:
            paper_all = dataset["overall"]
    records.append(
        {"group": OVERALL, "queries": len(all_sizes), "mean_neurons": all_mean, "paper_mean": paper_all}
    )
    df = pd.DataFrame.from_records(records, columns=["group", "queries", "mean_neurons", "paper_mean"])
    df["diff"] = df["mean_neurons"] - df["paper_mean"]
    return df


# --------------------------------------------------------------------------------------------
# Fig. 2a: overlap between groups
# --------------------------------------------------------------------------------------------


def overlap(a: set, b: set, measure: str = "jaccard") -> float:
    """Jaccard |A∩B| / |A∪B| or overlap coefficient |A∩B| / min(|A|, |B|); 0.0 when the
    denominator is 0 (an empty set shares nothing; the matrix puts 1.0 on its diagonal)."""
    if measure not in OVERLAP_MEASURES:
        raise InputError(f"unknown overlap measure {measure!r}; expected one of {OVERLAP_MEASURES}")
    inter = len(a & b)
    denom = len(a | b) if measure == "jaccard" else min(len(a), len(b))
    return inter / denom if denom else 0.0


def overlap_matrix(
    rows: Sequence[Mapping], groups_order: Sequence[str] | None = None, measure: str = "jaccard"
) -> pd.DataFrame:
    """Group × group overlap of QR-neuron sets (Fig. 2a): symmetric, 1.0 on the diagonal.

    Convention for a group with no neurons: 1.0 on its diagonal (a set equals itself) and 0.0
    against every other group, including another empty one (nothing is shared).
    """
    sets = group_neuron_sets(rows, groups_order)
    groups = list(sets)
    values = np.ones((len(groups), len(groups)))
    for i, a in enumerate(groups):
        for j in range(i + 1, len(groups)):
            values[i, j] = values[j, i] = overlap(sets[a], sets[groups[j]], measure)
    return pd.DataFrame(values, index=pd.Index(groups, name="group"), columns=pd.Index(groups, name="group"))


# --------------------------------------------------------------------------------------------
# Fig. 2b: layer distribution
# --------------------------------------------------------------------------------------------


def layer_distribution(rows: Sequence[Mapping], n_layers: int) -> pd.DataFrame:
    """QR neurons per layer (Fig. 2b), one row per layer 0..n_layers-1.

    ``neurons`` counts with multiplicity over queries (a neuron chosen by 5 queries counts 5, as
    a histogram of all QR neurons; so the column sums to the total number of QR neurons);
    ``distinct`` counts each neuron once; ``share`` = neurons / total (0 when there are none).
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise InputError(f"n_layers must be a positive int, got {n_layers!r}")
    counts = np.zeros(n_layers, dtype=np.int64)
    distinct: list[set[Neuron]] = [set() for _ in range(n_layers)]
    for pos, row in enumerate(rows):
        for layer, index in row_neurons(row, pos, n_layers):
            counts[layer] += 1
            distinct[layer].add((layer, index))
    total = int(counts.sum())
    return pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "neurons": counts,
            "distinct": [len(s) for s in distinct],
            "share": counts / total if total else np.zeros(n_layers),
        }
    )


# --------------------------------------------------------------------------------------------
# Fig. 5: NA × ICA heatmaps
# --------------------------------------------------------------------------------------------


def bin_starts(n_per_layer: int, n_bins: int) -> list[int]:
    """First neuron index of each of `n_bins` near-equal contiguous bins of 0..n_per_layer-1
    (neuron i falls in bin i * n_bins // n_per_layer)."""
    return [-(-b * n_per_layer // n_bins) for b in range(n_bins)]


def heatmap_grids(
    extras: Sequence[Mapping], groups_order: Sequence[str] | None = None, n_bins: int = 64
) -> dict[str, pd.DataFrame]:
    """Per group, NA × ICA of every cluster neuron summed over the group's queries on the
    layer × neuron-index grid (Fig. 5), binned along the index axis.

    A 32 × 11008 grid cannot be read at figure size (each neuron would be far below one pixel and
    isolated neurons vanish in resampling), so indices are summed into `n_bins` contiguous bins
    (default 64: 172 neurons each for Llama-2-7B; capped at n_per_layer). Input: selection-extras
    records with ``shape``, ``neurons`` and ``score``. Each DataFrame has index = layer and
    columns = first neuron index of each bin; its total equals the group's summed NA × ICA.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise InputError(f"n_bins must be a positive int, got {n_bins!r}")
    groups = ordered_groups(extras, groups_order)
    shape = None
    for pos, rec in enumerate(extras):
        this = rec.get("shape")
        if not (
            isinstance(this, list) and len(this) == 2 and all(isinstance(x, int) and x > 0 for x in this)
        ):
            raise InputError(f"selection-extras record {pos} ({rec.get('id')!r}): bad 'shape' {this!r}")
        if shape is not None and tuple(this) != shape:
            raise InputError(
                f"selection-extras record {pos} ({rec.get('id')!r}): shape {this} differs from {list(shape)}"
            )
        shape = tuple(this)
    if shape is None:
        raise InputError(
            "heatmap_grids needs at least one selection-extras record (the grid shape comes from them)"
        )
    n_layers, n_per_layer = shape
    n_bins = min(n_bins, n_per_layer)
    grids = {g: np.zeros((n_layers, n_bins)) for g in groups}
    for pos, rec in enumerate(extras):
        neurons = row_neurons(rec, pos, n_layers)
        scores = rec.get("score")
        if not isinstance(scores, list) or len(scores) != len(neurons):
            raise InputError(
                f"selection-extras record {pos} ({rec.get('id')!r}): 'score' must parallel 'neurons'"
            )
        if not neurons:
            continue
        arr = np.asarray(neurons, dtype=np.int64)
        if (arr[:, 1] >= n_per_layer).any():
            raise InputError(
                f"selection-extras record {pos} ({rec.get('id')!r}): neuron index >= {n_per_layer}"
            )
        np.add.at(
            grids[row_group(rec, pos)],
            (arr[:, 0], arr[:, 1] * n_bins // n_per_layer),
            np.asarray(scores, dtype=float),
        )
    starts = bin_starts(n_per_layer, n_bins)
    return {
        g: pd.DataFrame(
            grid,
            index=pd.RangeIndex(n_layers, name="layer"),
            columns=pd.Index(starts, name="index_bin_start"),
        )
        for g, grid in grids.items()
    }
