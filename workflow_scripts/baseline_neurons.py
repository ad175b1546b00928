"""One baseline's neurons per query, as many as QRNCA found for that query."""

from qrnca.consistency import check_records, read_attribution_shards
from qrnca.datasets.queries import read_dataset
from qrnca.io import read_jsonl, write_jsonl
from qrnca.neurons.baselines import baseline_rows
from qrnca.workflow.job import job

with job(snakemake) as log:
    used, baseline = snakemake.params.used, snakemake.wildcards.baseline
    queries = read_dataset(snakemake.input.dataset)
    records = read_attribution_shards(snakemake.input.attribution, queries)
    qrnca = read_jsonl(snakemake.input.qrnca)
    check_records(qrnca, queries, snakemake.input.qrnca, what="QRNCA neurons")
    names = {"selection.random_seed": "seed", "selection.threshold": "t",
             "selection.kn_share": "kn_share", "selection.kn_match_count": "kn_match_count"}
    settings = {names[key]: value for key, value in used.items()}  # this baseline's only
    rows = baseline_rows(records, baseline, qrnca, **settings)
    write_jsonl(snakemake.output[0], rows)
    log.info("%s: %d queries", baseline, len(rows))
