"""Figure 5: per group, summed NA x ICA on the layer x (binned) neuron-index grid."""

from qrnca.io import read_jsonl
from qrnca.outputs.analysis import heatmap_grids
from qrnca.outputs.plots import fig5_heatmaps
from qrnca.workflow.job import job

with job(snakemake):
    used = snakemake.params.used
    grids = heatmap_grids(read_jsonl(snakemake.input.clusters), n_bins=used["analysis.heatmap_bins"])
    fig5_heatmaps(grids, [snakemake.output.pdf, snakemake.output.png],
                  title=f"{snakemake.wildcards.model} / {snakemake.wildcards.dataset}",
                  dpi=used["analysis.figure_dpi"])
