"""The paper's every number beside ours, for each model (Markdown and CSV)."""

import pandas as pd

from qrnca.paper_comparison import paper_comparison, write_csv, write_markdown
from qrnca.workflow import job

with job(snakemake) as log:
    names = ("table3", "table4", "table6", "table7", "fig2a")
    model_tables = {}
    for k, model in enumerate(snakemake.params.models):
        model_tables[model] = {
            name: pd.read_csv(snakemake.input[name][k])
            for name in names
            if len(snakemake.input[name]) > k
        }
    comparison = paper_comparison(model_tables)
    write_markdown(comparison, snakemake.output.md)
    write_csv(comparison, snakemake.output.csv)
    log.info("%d rows", len(comparison))
