"""Figure 2b: QR neurons per layer, per dataset (and its CSV)."""

import pandas as pd

from qrnca.analysis import layer_distribution
from qrnca.io import atomic_open, read_jsonl
from qrnca.plots import fig2b_layers
from qrnca.selection import record_shape
from qrnca.workflow import job

with job(snakemake):
    distributions = {}
    inputs = zip(snakemake.params.datasets, snakemake.input.qrnca, snakemake.input.clusters)
    for dataset, qrnca_path, clusters_path in inputs:
        n_layers = record_shape(read_jsonl(clusters_path)[0])[0]
        distributions[dataset] = layer_distribution(read_jsonl(qrnca_path), n_layers)
    fig2b_layers(distributions, [snakemake.output.pdf, snakemake.output.png])
    table = pd.concat(
        [d.assign(dataset=name) for name, d in distributions.items()], ignore_index=True
    )
    with atomic_open(snakemake.output.csv) as fh:
        table.to_csv(fh, index=False)
