"""QRNCA and its two ablations from the stored attributions of one model x dataset."""

from qrnca.consistency import read_attribution_shards
from qrnca.datasets.queries import read_dataset
from qrnca.io import write_json, write_jsonl
from qrnca.neurons.selection import run_qrnca
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    queries = read_dataset(snakemake.input.dataset)
    records = read_attribution_shards(snakemake.input.shards, queries)
    run = run_qrnca(records, t=used["selection.threshold"], u=used["selection.common_share"],
                    top_v=used["selection.top_v"])
    out = snakemake.output
    write_jsonl(out.qrnca, run.rows("qrnca"))
    write_jsonl(out.no_ica, run.rows("qrnca_no_ica"))
    write_jsonl(out.with_common, run.rows("qrnca_with_common"))
    write_json(out.common, run.common_json())
    write_jsonl(out.clusters, run.cluster_score_records())
    rows = run.rows("qrnca")
    log.info("%d queries, mean %.2f QR neurons per query", len(rows),
             sum(len(r["neurons"]) for r in rows) / max(1, len(rows)))
