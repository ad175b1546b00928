"""Boost and suppress every method's neurons on related and unrelated prompts."""

from pathlib import Path

from qrnca.device import resolve_device
from qrnca.evaluation import EvaluationSettings, evaluate, neuron_sets, write_evaluation
from qrnca.io import read_jsonl
from qrnca.models import load_model
from qrnca.provenance import model_provenance
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    options = {k: v for k, v in snakemake.params.settings.items() if k != "device"}
    settings = EvaluationSettings.from_config(
        {**options, "answer_token": snakemake.params.answer_token}
    )
    device = resolve_device(snakemake.params.device)
    model, tokenizer = load_model(spec, device=device)
    queries = read_jsonl(snakemake.input.dataset)
    neurons = {
        method: neuron_sets(read_jsonl(path), queries, source=path)
        for method, path in zip(snakemake.params.methods, snakemake.input.neurons)
    }
    run = evaluate(model, tokenizer, queries, neurons, settings)
    extra = {"model": model_provenance(model, spec), "device": str(device)}
    write_evaluation(Path(snakemake.output.settings).parent, run, settings, extra=extra)
    log.info("evaluation stats: %s", run.stats)
    log.extra.update(extra, stats=run.stats)
