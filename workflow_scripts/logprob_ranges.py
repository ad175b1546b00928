"""Direction ranges of a model's neurons, the bounds of the log-probability increase (once per
model, read by every attribution job)."""

from qrnca.attribution.logprob import direction_ranges, logprob_applicability, write_ranges
from qrnca.models.device import resolve_device
from qrnca.models.loading import load_model
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import model_spec
from qrnca.workflow.provenance import model_provenance

with job(snakemake) as log:
    spec = model_spec(snakemake.params.used, snakemake.wildcards.model)
    device = resolve_device(execution_setting(snakemake, "attribution.device"))
    model, _ = load_model(spec, device=device)
    reason = logprob_applicability(model)
    if reason:
        log.info("the log-probability increase does not apply: %s", reason)
    write_ranges(snakemake.output[0], None if reason else direction_ranges(model))
    log.extra["model"] = model_provenance(model, spec)
