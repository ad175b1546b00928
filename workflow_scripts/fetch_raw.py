"""Download a pinned raw release (or one released file) and verify its sha256 checksums."""

from qrnca.datasets import fetch
from qrnca.workflow.job import job

with job(snakemake) as log:
    if snakemake.rule == "fetch_released":
        fetch.download_released_file(snakemake.wildcards.file, snakemake.output[0])
    else:
        fetch.download(snakemake.wildcards.source, snakemake.output[0])
    log.extra["urls"] = fetch.URLS
