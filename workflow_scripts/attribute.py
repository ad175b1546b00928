"""Integrated-gradient attribution of one shard of a dataset (resumable, with progress)."""

from qrnca.attribution.job import attribute_dataset
from qrnca.attribution.logprob import read_ranges
from qrnca.device import resolve_device
from qrnca.io import read_jsonl
from qrnca.models import PromptEncoding, load_model
from qrnca.provenance import model_provenance
from qrnca.workflow import job

with job(snakemake) as log:
    spec, s = snakemake.params.spec, snakemake.params.settings
    device = resolve_device(s["device"])
    model, tokenizer = load_model(spec, device=device, dtype=s["dtype"])
    shard = (int(snakemake.wildcards.shard), int(snakemake.wildcards.n))
    attribute_dataset(
        model,
        tokenizer,
        read_jsonl(snakemake.input.dataset),
        snakemake.output[0],
        steps=s["steps"],
        ig_grid=s["ig_grid"],
        encoding=PromptEncoding.of(snakemake.params.encoding),
        store_fraction=s["store_fraction"],
        baseline_top_k=s["baseline_top_k"],
        shard=shard,
        method=s["method"],
        max_rows=s["max_rows"],
        logprob=snakemake.params.logprob,
        ranges=read_ranges(snakemake.input.ranges, model) if snakemake.params.logprob else None,
        batch_queries=s["batch_queries"],
    )
    log.extra["model"] = model_provenance(model, spec)
    log.extra["device"] = {"device": str(device), "dtype": str(model.dtype)}
