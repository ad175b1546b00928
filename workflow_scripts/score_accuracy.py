"""Prompt-based accuracy of a model on one dataset (per group and overall)."""

from qrnca.device import resolve_device
from qrnca.io import read_jsonl
from qrnca.models import PromptEncoding, load_model
from qrnca.provenance import model_provenance
from qrnca.scoring import encoding_study, write_accuracy, write_scores
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    device = resolve_device(snakemake.params.device)
    model, tokenizer = load_model(spec, device=device)
    scores, table = encoding_study(
        model,
        tokenizer,
        read_jsonl(snakemake.input.dataset),
        used=PromptEncoding.of(snakemake.params.encoding),
        device=device,
    )
    write_scores(snakemake.output.scores, scores)
    write_accuracy(snakemake.output.table, table)
    log.info("\n%s", table.to_string(index=False))
    log.extra["model"] = model_provenance(model, spec)
    log.extra["device"] = {"device": str(device), "dtype": str(model.dtype)}
