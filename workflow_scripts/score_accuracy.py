"""Prompt-based accuracy of a model on one dataset (per group and overall)."""

from qrnca.datasets.queries import read_dataset
from qrnca.evaluation.scoring import encoding_study, write_scores
from qrnca.io import write_csv
from qrnca.models.device import resolve_device
from qrnca.models.loading import PromptEncoding, load_model
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import encoding, model_spec
from qrnca.workflow.provenance import model_provenance

with job(snakemake) as log:
    used = snakemake.params.used
    spec = model_spec(used, snakemake.wildcards.model)
    queries = read_dataset(snakemake.input.dataset)
    device = resolve_device(execution_setting(snakemake, "attribution.device"))
    model, tokenizer = load_model(spec, device=device)
    scores, table = encoding_study(
        model,
        tokenizer,
        queries,
        used=PromptEncoding.of(encoding(used)),
        device=device,
    )
    write_scores(snakemake.output.scores, scores)
    write_csv(snakemake.output.table, table)
    log.info("\n%s", table.to_string(index=False))
    log.extra["model"] = model_provenance(model, spec)
    log.extra["device"] = {"device": str(device), "dtype": str(model.dtype)}
