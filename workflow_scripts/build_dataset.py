"""Build one multiple-choice dataset (JSONL, one query per line) from its raw source."""

from qrnca.datasets import build_from_spec, write_dataset
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import dataset_spec

with job(snakemake) as log:
    spec = dataset_spec(snakemake.params.used, snakemake.wildcards.dataset)
    spec["verify_checksums"] = execution_setting(snakemake, "datasets[].verify_checksums")
    queries = build_from_spec(spec, snakemake.input.raw)
    n = write_dataset(snakemake.output[0], queries)
    log.info("%s: %d queries from %s", spec["name"], n, snakemake.input.raw)
    log.extra["dataset"] = {"name": spec["name"], "source": spec["source"], "queries": n}
