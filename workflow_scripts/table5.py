"""Table 5: the vocabulary tokens each common neuron's output direction promotes."""

import json

from qrnca.device import resolve_device
from qrnca.layouts import grid_shape
from qrnca.models import load_model
from qrnca.provenance import model_provenance
from qrnca.vocab_projection import summarize, table5, write_summary, write_table5
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    model, tokenizer = load_model(spec, device=resolve_device(snakemake.params.device))
    with open(snakemake.input.common, encoding="utf-8") as fh:
        common = json.load(fh)
    table = table5(model, tokenizer, common, top_k=snakemake.params.top_k,
                   source=snakemake.input.common)
    summary = summarize(table, grid_shape(model)[0], clusters=common.get("clusters"))
    write_table5(snakemake.output.table, table)
    write_summary(snakemake.output.summary, summary)
    log.info("summary: %s", summary)
    log.extra["model"] = model_provenance(model, spec)
