"""Analyses: Table 3 against the paper, overlap matrix invariants, layer counts, heatmap totals."""

import math

import numpy as np
import pytest

from qrnca.errors import InputError
from qrnca.outputs import paper_values
from qrnca.outputs.analysis import (bin_starts, heatmap_grids, layer_distribution, overlap_matrix,
                                    table3)


def row(qid, group, neurons):
    return {"id": qid, "group": group, "neurons": [list(n) for n in neurons], "scores": [1.0] * len(neurons)}


ROWS = [
    row("a1", "biology", [(0, 0), (1, 1), (2, 2)]),
    row("a2", "biology", [(0, 0), (3, 3)]),  # biology set: {00, 11, 22, 33}
    row("b1", "physics", [(0, 0), (1, 1), (4, 4)]),  # physics set: {00, 11, 44}
    row("c1", "chemistry", []),  # chemistry: empty
]


def test_table3_means_and_paper():
    df = table3(ROWS, ["biology", "physics", "chemistry", "mathematics"])
    assert list(df["group"]) == ["biology", "physics", "chemistry", "mathematics", "ALL"]
    assert list(df["queries"]) == [2, 1, 1, 0, 4]
    assert df["mean_neurons"].iloc[:3].tolist() == [2.5, 3.0, 0.0]
    assert math.isnan(df["mean_neurons"].iloc[3])
    assert df["paper_mean"].iloc[0] == 13.1 and df["diff"].iloc[0] == pytest.approx(2.5 - 13.1)
    assert df["mean_neurons"].iloc[4] == pytest.approx((2.5 + 3.0 + 0.0) / 3)  # mean of group means
    assert math.isnan(df["paper_mean"].iloc[4])  # not the paper's full set of domains
    by_query = table3(ROWS, ["biology", "physics", "chemistry"], overall="query_mean")
    assert by_query["mean_neurons"].iloc[-1] == pytest.approx(8 / 4)
    full = table3(ROWS, list(paper_values.DOMAINS))
    assert full["paper_mean"].iloc[-1] == 12.9
    with pytest.raises(InputError, match="not in groups_order"):
        table3(ROWS, ["biology"])


def test_overlap_matrix_invariants():
    m = overlap_matrix(ROWS, ["biology", "physics", "chemistry", "geography"])
    values = m.to_numpy()
    assert np.allclose(values, values.T)
    assert np.all(np.diag(values) == 1.0)  # including the empty groups
    assert m.loc["biology", "physics"] == pytest.approx(2 / 5)  # {00,11} / {00,11,22,33,44}
    assert m.loc["biology", "chemistry"] == 0.0
    assert m.loc["chemistry", "geography"] == 0.0  # two empty groups share nothing
    oc = overlap_matrix(ROWS, measure="overlap_coefficient")
    assert list(oc.index) == ["biology", "physics", "chemistry"]  # order of first appearance
    assert oc.loc["physics", "biology"] == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="unknown overlap measure"):
        overlap_matrix(ROWS, measure="dice")


def test_layer_distribution_counts_with_multiplicity():
    df = layer_distribution(ROWS, n_layers=6)
    assert list(df["layer"]) == list(range(6))
    assert list(df["neurons"]) == [3, 2, 1, 1, 1, 0]  # (0,0) chosen by three queries
    assert list(df["distinct"]) == [1, 1, 1, 1, 1, 0]
    assert df["neurons"].sum() == sum(len(r["neurons"]) for r in ROWS)
    assert df["share"].sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="layer 4 >= n_layers 4"):
        layer_distribution(ROWS, n_layers=4)


def test_heatmap_grids_totals_and_binning():
    rng = np.random.default_rng(0)
    extras = []
    for k in range(6):
        flat = rng.choice(4 * 100, size=30, replace=False)
        extras.append(
            {
                "id": f"q{k}",
                "group": "en" if k < 4 else "fr",
                "shape": [4, 100],
                "neurons": [[int(f) // 100, int(f) % 100] for f in flat],
                "score": rng.normal(0.1, 0.05, size=30).tolist(),
            }
        )
    grids = heatmap_grids(extras, ["en", "fr", "ja"], n_bins=8)
    assert list(grids) == ["en", "fr", "ja"]
    for g, grid in grids.items():
        assert grid.shape == (4, 8)
        expected = sum(sum(e["score"]) for e in extras if e["group"] == g)
        assert grid.to_numpy().sum() == pytest.approx(expected)
    assert list(grids["en"].columns) == bin_starts(100, 8) == [0, 13, 25, 38, 50, 63, 75, 88]
    # a neuron lands in its layer row and index bin
    one = heatmap_grids(
        [{"id": "x", "group": "g", "shape": [4, 100], "neurons": [[2, 26]], "score": [0.5]}], n_bins=8
    )
    assert one["g"].loc[2, 25] == 0.5 and one["g"].to_numpy().sum() == 0.5
    # more bins than neurons per layer: one column per neuron
    assert heatmap_grids(extras, n_bins=1000)["en"].shape == (4, 100)
    with pytest.raises(InputError, match="differs"):
        heatmap_grids(extras + [{"id": "y", "group": "en", "shape": [4, 99], "neurons": [], "score": []}])


def test_paper_table3_overall_is_mean_of_group_means():
    # why table3 defaults to overall="group_mean": the paper's 12.9 is the unweighted mean
    domain = paper_values.TABLE3["domain"]
    assert round(float(np.mean(list(domain["groups"].values()))), 1) == domain["overall"]
    assert paper_values.TABLE6["random"]["domain"]["boost"] == {"value": None, "upper_bound": 0.3}
