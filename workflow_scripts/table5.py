"""Table 5: the vocabulary tokens each common neuron's output direction promotes."""

import json

from qrnca.io import write_csv
from qrnca.models.device import resolve_device
from qrnca.models.layouts import grid_shape
from qrnca.models.loading import load_model
from qrnca.neurons.vocab_projection import summarize, table5, write_summary
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import model_spec
from qrnca.workflow.provenance import model_provenance

with job(snakemake) as log:
    used = snakemake.params.used
    spec = model_spec(used, snakemake.wildcards.model)
    device = resolve_device(execution_setting(snakemake, "evaluation.device"))
    model, tokenizer = load_model(spec, device=device)
    with open(snakemake.input.common, encoding="utf-8") as fh:
        common = json.load(fh)
    table = table5(model, tokenizer, common, top_k=used["analysis.common_top_tokens"],
                   source=snakemake.input.common)
    summary = summarize(table, grid_shape(model)[0], clusters=common.get("clusters"))
    write_csv(snakemake.output.table, table)
    write_summary(snakemake.output.summary, summary)
    log.info("summary: %s", summary)
    log.extra["model"] = model_provenance(model, spec)
