"""Figures render from small synthetic data into non-empty PNG and PDF files, deterministically."""

import numpy as np
import pytest

from qrnca.errors import InputError
from qrnca.outputs.analysis import heatmap_grids, layer_distribution, overlap_matrix
from qrnca.outputs.plots import fig2a_overlap, fig2b_layers, fig5_heatmaps, zero_white_scale

PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF"


def synthetic_rows(groups, n_layers=8, n_per_layer=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in groups:
        for k in range(3):
            flat = rng.choice(n_layers * n_per_layer, size=5, replace=False)
            rows.append(
                {
                    "id": f"{g}{k}",
                    "group": g,
                    "neurons": [[int(f) // n_per_layer, int(f) % n_per_layer] for f in flat],
                    "scores": rng.random(5).tolist(),
                }
            )
    return rows


def check(paths, tmp_path):
    assert [p.name for p in paths] == ["fig.pdf", "fig.png"]
    assert (tmp_path / "fig.pdf").read_bytes().startswith(PDF)
    assert (tmp_path / "fig.png").read_bytes().startswith(PNG)
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]  # no temp files left


def test_fig2a(tmp_path):
    mats = {
        "domain": overlap_matrix(synthetic_rows(["biology", "physics", "chemistry"])),
        "language": overlap_matrix(synthetic_rows(["en", "fr"], seed=1)),
    }
    check(fig2a_overlap(mats, [tmp_path / "fig.pdf", tmp_path / "fig.png"]), tmp_path)


def test_fig2b_deterministic(tmp_path):
    dists = {
        "domain": layer_distribution(synthetic_rows(["a", "b"]), 8),
        "language": layer_distribution(synthetic_rows(["en"], seed=2), 8),
    }
    check(fig2b_layers(dists, [tmp_path / "fig.pdf", tmp_path / "fig.png"]), tmp_path)
    first = {p: (tmp_path / p).read_bytes() for p in ("fig.pdf", "fig.png")}
    fig2b_layers(dists, [tmp_path / "fig.pdf", tmp_path / "fig.png"])
    assert {p: (tmp_path / p).read_bytes() for p in ("fig.pdf", "fig.png")} == first


def test_fig5(tmp_path):
    extras = [dict(r, shape=[8, 40], score=r["scores"]) for r in synthetic_rows(["en", "fr", "ja", "ru"])]
    grids = heatmap_grids(extras, n_bins=16)
    check(fig5_heatmaps(grids, [tmp_path / "fig.pdf", tmp_path / "fig.png"], title="languages"), tmp_path)


@pytest.mark.parametrize("low", [-3.0, 0.0])
def test_fig5_draws_zero_as_white_whatever_the_signs(low):
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure

    grid = pd.DataFrame([[0.0, 5.0], [low, 1.0]])
    ax = Figure().subplots()
    sns.heatmap(grid, ax=ax, **zero_white_scale([grid]))
    mesh = ax.collections[0]
    assert all(channel > 0.95 for channel in mesh.cmap(mesh.norm(0.0))[:3])


def test_bad_output_suffix_writes_nothing(tmp_path):
    dists = {"d": layer_distribution(synthetic_rows(["a"]), 8)}
    with pytest.raises(InputError, match="unsupported figure format"):
        fig2b_layers(dists, [tmp_path / "fig.png", tmp_path / "fig.jpeg"])
    assert list(tmp_path.iterdir()) == []
