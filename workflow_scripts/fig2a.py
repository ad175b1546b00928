"""Figure 2a: per dataset, the group x group overlap of QR-neuron sets (and its CSV)."""

import pandas as pd

from qrnca.consistency import check_records
from qrnca.datasets.queries import read_dataset
from qrnca.io import read_jsonl, write_csv
from qrnca.outputs.analysis import overlap_matrix
from qrnca.outputs.plots import fig2a_overlap
from qrnca.workflow.job import job

with job(snakemake):
    used = snakemake.params.used
    measure = used["analysis.overlap"]
    matrices = {}
    inputs = zip(used["datasets[].name"], snakemake.input.qrnca, snakemake.input.datasets)
    for dataset, path, dataset_path in inputs:
        rows = read_jsonl(path)
        check_records(rows, read_dataset(dataset_path), path, what="QRNCA neurons")
        matrices[dataset] = overlap_matrix(rows, measure=measure)
    fig2a_overlap(matrices, [snakemake.output.pdf, snakemake.output.png], measure=measure,
                  dpi=used["analysis.figure_dpi"])
    long = pd.concat(
        [m.rename_axis("group_a").rename_axis(columns="group_b").stack().rename(measure)
         .reset_index().assign(dataset=name) for name, m in matrices.items()],
        ignore_index=True,
    )
    write_csv(snakemake.output.csv, long[["dataset", "group_a", "group_b", measure]])
