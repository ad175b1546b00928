"""Integrated-gradient attribution of one shard of a dataset (resumable, with progress)."""

from qrnca.attribution.job import attribute_dataset
from qrnca.attribution.logprob import read_ranges
from qrnca.datasets.queries import read_dataset
from qrnca.models.device import resolve_device
from qrnca.models.loading import PromptEncoding, load_model
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import encoding, model_spec
from qrnca.workflow.provenance import checksum, model_identity, model_provenance

with job(snakemake) as log:
    used, name = snakemake.params.used, snakemake.wildcards.model
    spec = model_spec(used, name)
    queries = read_dataset(snakemake.input.dataset)  # a bad dataset fails before any GPU work
    identity = {"dataset_sha256": checksum(snakemake.input.dataset)["sha256"],
                "model": model_identity(spec)}
    device = resolve_device(execution_setting(snakemake, "attribution.device"))
    model, tokenizer = load_model(spec, device=device)
    shard = (int(snakemake.wildcards.shard), int(snakemake.wildcards.n))
    attribute_dataset(
        model,
        tokenizer,
        queries,
        snakemake.output[0],
        steps=used["attribution.steps"],
        ig_grid=used["attribution.ig_grid"],
        encoding=PromptEncoding.of(encoding(used)),
        store_fraction=used["attribution.store_fraction"],
        baseline_top_k=used["attribution.baseline_top_k"],
        shard=shard,
        method=used["attribution.method"],
        max_rows=execution_setting(snakemake, "attribution.max_rows"),
        logprob=used["methods"],
        ranges=read_ranges(snakemake.input.ranges, model) if used["methods"] else None,
        batch_queries=execution_setting(snakemake, "attribution.batch_queries"),
        identity=identity,
    )
    log.extra["model"] = model_provenance(model, spec)
    log.extra["identity"] = identity
    log.extra["device"] = {"device": str(device), "dtype": str(model.dtype)}
