"""Figure 2b: QR neurons per layer, per dataset (and its CSV)."""

import pandas as pd

from qrnca.consistency import check_records
from qrnca.datasets.queries import read_dataset
from qrnca.io import read_jsonl, write_csv
from qrnca.neurons.selection import record_shape
from qrnca.outputs.analysis import layer_distribution
from qrnca.outputs.plots import fig2b_layers
from qrnca.workflow.job import job

with job(snakemake):
    used = snakemake.params.used
    distributions = {}
    inputs = zip(used["datasets[].name"], snakemake.input.qrnca, snakemake.input.clusters,
                 snakemake.input.datasets)
    for dataset, qrnca_path, clusters_path, dataset_path in inputs:
        rows = read_jsonl(qrnca_path)
        check_records(rows, read_dataset(dataset_path), qrnca_path, what="QRNCA neurons")
        n_layers = record_shape(read_jsonl(clusters_path)[0])[0]
        distributions[dataset] = layer_distribution(rows, n_layers)
    fig2b_layers(distributions, [snakemake.output.pdf, snakemake.output.png],
                 dpi=used["analysis.figure_dpi"])
    table = pd.concat(
        [d.assign(dataset=name) for name, d in distributions.items()], ignore_index=True
    )
    write_csv(snakemake.output.csv, table)
