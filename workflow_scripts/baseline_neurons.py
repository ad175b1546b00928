"""One baseline's neurons per query, as many as QRNCA found for that query."""

from qrnca.baselines import baseline_rows
from qrnca.io import read_jsonl, write_jsonl
from qrnca.workflow import job

with job(snakemake) as log:
    s = snakemake.params.settings
    records = [r for path in snakemake.input.attribution for r in read_jsonl(path)]
    rows = baseline_rows(
        records,
        snakemake.wildcards.baseline,
        read_jsonl(snakemake.input.qrnca),
        seed=s["random_seed"],
        t=s["threshold"],
        kn_share=s["kn_share"],
        kn_match_count=s["kn_match_count"],
    )
    write_jsonl(snakemake.output[0], rows)
    log.info("%s: %d queries", snakemake.wildcards.baseline, len(rows))
