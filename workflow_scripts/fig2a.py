"""Figure 2a: per dataset, the group x group overlap of QR-neuron sets (and its CSV)."""

import pandas as pd

from qrnca.analysis import overlap_matrix
from qrnca.io import atomic_open, read_jsonl
from qrnca.plots import fig2a_overlap
from qrnca.workflow import job

with job(snakemake):
    measure = snakemake.params.measure
    matrices = {
        dataset: overlap_matrix(read_jsonl(path), measure=measure)
        for dataset, path in zip(snakemake.params.datasets, snakemake.input)
    }
    fig2a_overlap(matrices, [snakemake.output.pdf, snakemake.output.png], measure=measure)
    long = pd.concat(
        [m.rename_axis("group_a").rename_axis(columns="group_b").stack().rename(measure)
         .reset_index().assign(dataset=name) for name, m in matrices.items()],
        ignore_index=True,
    )
    with atomic_open(snakemake.output.csv) as fh:
        long[["dataset", "group_a", "group_b", measure]].to_csv(fh, index=False)
