"""Figures 2a, 2b and 5 of the QRNCA paper from the DataFrames of `qrnca.outputs.analysis`.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot global state, so
the library works headless and leaks no figures) under a fixed rc style, and saved by
`save_figure`, the one figure writer of the package (Figs. 3/4 use it too): atomically to every
requested path (a temporary file with the right suffix beside the target, moved into place, with
the permissions of every other output), at the config's `analysis.figure_dpi`, and without
creation dates, so the same inputs give the same bytes. The paper's reported values are drawn beside ours where they exist
(overlap ranges in the Fig. 2a titles, peak layers shaded in Fig. 2b).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import InputError
from ..io import atomic_path
from . import paper_values

FORMATS = {".pdf": "pdf", ".png": "png", ".svg": "svg"}
#: Resolution of raster output (PNG, and rasterised parts of a PDF): the schema's default of
#: `analysis.figure_dpi`.
DEFAULT_DPI = 150
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": 100,
    "svg.hashsalt": "qrnca",
    "path.simplify": True,
}
#: Metadata that would differ between two runs (creation dates), dropped.
_NO_DATES = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}


def save_figure(fig: Figure, outputs: Sequence[str | os.PathLike],
                dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write `fig` to every path in `outputs` (format from the suffix: pdf, png, svg) at `dpi`,
    each atomically and without creation dates: the same figure gives the same bytes."""
    paths = [Path(p) for p in outputs]
    if not paths:
        raise InputError("save_figure: no output paths given")
    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise InputError(f"{path}: unsupported figure format; use one of {sorted(FORMATS)}")
    for path in paths:
        fmt = FORMATS[path.suffix.lower()]
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_NO_DATES.get(fmt),
                        bbox_inches="tight")
    return paths


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _check_panels(panels: Mapping, what: str) -> None:
    if not panels:
        raise InputError(f"{what}: nothing to plot (no panels given)")


def fig2a_overlap(
    matrices: Mapping[str, pd.DataFrame],
    outputs: Sequence[str | os.PathLike],
    measure: str = "Jaccard",
    paper: Mapping[str, Mapping] | None = None,
    dpi: int = DEFAULT_DPI,
) -> list[Path]:
    """Fig. 2a: one annotated heatmap per dataset of the group × group overlap matrix.

    The diagonal (always 1) is masked so the colour scale spans the off-diagonal values that
    carry the information; the panel title names the paper's off-diagonal range for that
    dataset key when `paper` (default `paper_values.FIG2A`) has one.
    """
    _check_panels(matrices, "fig2a_overlap")
    paper = paper_values.FIG2A if paper is None else paper
    with matplotlib.rc_context(STYLE):
        size = max(len(m) for m in matrices.values())
        cell = 0.55
        fig = Figure(figsize=(len(matrices) * (size * cell + 1.6), size * cell + 1.4), layout="constrained")
        axes = fig.subplots(1, len(matrices), squeeze=False)[0]
        for ax, (name, matrix) in zip(axes, matrices.items()):
            values = matrix.to_numpy(dtype=float)
            mask = np.eye(len(matrix), dtype=bool)
            off = values[~mask]
            vmax = float(off.max()) if off.size and off.max() > 0 else 1.0
            ax.set_facecolor("0.88")  # the masked diagonal
            sns.heatmap(
                matrix,
                ax=ax,
                mask=mask,
                annot=True,
                fmt=".2f" if vmax >= 0.05 else ".3f",
                cmap="Blues",
                vmin=0.0,
                vmax=vmax,
                square=True,
                linewidths=0.5,
                linecolor="white",
                annot_kws={"size": 7},
                cbar_kws={"shrink": 0.7, "label": measure},
            )
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(axis="x", labelrotation=45)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
            ax.tick_params(axis="y", labelrotation=0)
            title = f"{name}: QR-neuron overlap"
            if name in paper:
                lo, hi = paper[name]["range"]
                a, b = paper[name]["highest_pair"]
                title += f"\npaper: {lo:.2f}–{hi:.2f}, highest {a}–{b}"
            ax.set_title(title)
        return save_figure(fig, outputs, dpi=dpi)


def fig2b_layers(
    distributions: Mapping[str, pd.DataFrame],
    outputs: Sequence[str | os.PathLike],
    paper_peaks: bool | None = None,
    dpi: int = DEFAULT_DPI,
) -> list[Path]:
    """Fig. 2b: QR neurons per layer, one bar panel per dataset (`analysis.layer_distribution`).

    With `paper_peaks` (default: when the model has the paper's 32 layers) the paper's peak
    layers 15–18 and ~30 are shaded for comparison.
    """
    _check_panels(distributions, "fig2b_layers")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 2.2 * len(distributions) + 0.4), layout="constrained")
        axes = fig.subplots(len(distributions), 1, squeeze=False)[:, 0]
        for ax, (name, dist) in zip(axes, distributions.items()):
            n_layers = len(dist)
            show = paper_peaks if paper_peaks is not None else n_layers == paper_values.FIG2B["n_layers"]
            if show:
                lo, hi = paper_values.FIG2B["middle_peak_layers"]
                top = paper_values.FIG2B["top_peak_layer"]
                ax.axvspan(
                    lo - 0.5,
                    hi + 0.5,
                    color="orange",
                    alpha=0.15,
                    lw=0,
                    label=f"paper peaks ({lo}–{hi}, ~{top})",
                )
                ax.axvspan(top - 0.5, top + 0.5, color="orange", alpha=0.15, lw=0)
            ax.bar(dist["layer"], dist["neurons"], color="#3b6ea8", width=0.8, label="QR neurons")
            ax.set_xlim(-0.7, n_layers - 0.3)
            step = max(1, math.ceil(n_layers / 16))
            ax.set_xticks(range(0, n_layers, step))
            ax.set_ylabel("QR neurons")
            ax.set_title(f"{name}: {int(dist['neurons'].sum())} QR neurons over {n_layers} layers")
            ax.legend(loc="upper left", frameon=False, fontsize=7)
        axes[-1].set_xlabel("layer")
        return save_figure(fig, outputs, dpi=dpi)


def zero_white_scale(grids) -> dict:
    """Colour-scale keywords of `sns.heatmap` shared by `grids`: a diverging map centred at zero,
    so an empty cell is white whatever the sign of the other values."""
    grids = list(grids)
    vmax = max(0.0, max(float(g.to_numpy().max()) for g in grids))
    vmin = min(0.0, min(float(g.to_numpy().min()) for g in grids))
    if vmax == vmin:
        vmax = 1.0
    return {"cmap": "RdBu_r", "center": 0.0, "vmin": vmin, "vmax": vmax}


def fig5_heatmaps(
    grids: Mapping[str, pd.DataFrame],
    outputs: Sequence[str | os.PathLike],
    ncols: int = 3,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> list[Path]:
    """Fig. 5: one layer × neuron-index heatmap of summed NA × ICA per group
    (`analysis.heatmap_grids`), layer 0 at the bottom, one shared colour scale so groups compare.
    Zero is white: positive sums are red, negative ones (ICA < 0 for a neuron found in nearly
    every cluster) blue, on a scale centred at zero."""
    _check_panels(grids, "fig5_heatmaps")
    scale = zero_white_scale(grids.values())
    nrows, ncols = _grid(len(grids), ncols)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.2 * ncols + 0.8, 2.6 * nrows + (0.4 if title else 0.0)), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        flat = axes.ravel()
        mappable = None
        for k, (ax, (name, grid)) in enumerate(zip(flat, grids.items())):
            sns.heatmap(grid, ax=ax, cbar=False, rasterized=True, **scale)
            ax.invert_yaxis()
            n_layers, n_bins = grid.shape
            xstep = max(1, n_bins // 4)
            ax.set_xticks(
                np.arange(0, n_bins, xstep) + 0.5, [str(c) for c in grid.columns[::xstep]], rotation=0
            )
            ystep = max(1, math.ceil(n_layers / 8))
            ax.set_yticks(
                np.arange(0, n_layers, ystep) + 0.5, [str(i) for i in grid.index[::ystep]], rotation=0
            )
            ax.set_title(name)
            ax.set_xlabel("neuron index (bin start)" if k // ncols == nrows - 1 else "")
            ax.set_ylabel("layer" if k % ncols == 0 else "")
            mappable = ax.collections[0]
        for ax in flat[len(grids) :]:
            ax.set_visible(False)
        fig.colorbar(mappable, ax=list(flat[: len(grids)]), shrink=0.8, label="summed NA × ICA")
        if title:
            fig.suptitle(title)
        return save_figure(fig, outputs, dpi=dpi)
