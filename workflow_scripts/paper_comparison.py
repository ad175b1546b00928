"""The paper's every number beside ours, for each model (Markdown and CSV), then the paper's
claims decided on our tables (a Markdown section and their own CSV)."""

import pandas as pd

from qrnca.outputs import paper_claims
from qrnca.outputs.paper_comparison import paper_comparison, write_csv, write_markdown
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    names = ("table3", "table4", "table6", "table7", "fig2a")
    datasets = list(used["datasets[].name"])
    model_tables, claim_tables = {}, {}
    for k, model in enumerate(used["models[].name"]):
        model_tables[model] = {
            name: pd.read_csv(snakemake.input[name][k])
            for name in names
            if len(snakemake.input[name]) > k
        }
        summaries = {}
        for ds in datasets:
            name = f"/{model}/tables/table5_common_tokens_{ds}.json"
            (path,) = [p for p in snakemake.input.table5 if p.endswith(name)]
            summaries[ds] = paper_claims.read_summary(path)
        claim_tables[model] = {
            **{n: t for n, t in model_tables[model].items() if n in paper_claims.TABLES},
            "fig2b": pd.read_csv(snakemake.input.fig2b[k]),
            "table5": summaries,
        }
    comparison = paper_comparison(model_tables)
    kinds = {
        name: paper_claims.dataset_kind({"source": source, "released_file": released})
        for name, source, released in zip(
            datasets, used["datasets[].source"], used["datasets[].released_file"]
        )
    }
    claims = paper_claims.evaluate_claims(claim_tables, kinds)
    write_markdown(comparison, snakemake.output.md, appendix=paper_claims.markdown(claims))
    write_csv(comparison, snakemake.output.csv)
    paper_claims.write_csv(claims, snakemake.output.claims)
    log.info("%d comparison rows; claims: %s", len(comparison),
             claims["verdict"].value_counts().to_dict())
