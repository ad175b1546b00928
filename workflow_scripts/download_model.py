"""Fetch a hub model at its pinned revision into the local cache (run on a login node)."""

from qrnca.io import write_json
from qrnca.models.loading import download_model
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    record = download_model({"name": snakemake.wildcards.model,
                             "hf_id": used["models[].hf_id"],
                             "revision": used["models[].revision"]})
    write_json(snakemake.output[0], record)
    log.info("cached %s", record)
