"""Boost and suppress every method's neurons on related and unrelated prompts."""

from pathlib import Path

from qrnca.datasets.queries import read_dataset
from qrnca.evaluation.runner import (TIMING_STATS, EvaluationSettings, evaluate, neuron_sets,
                                     write_evaluation)
from qrnca.io import read_jsonl
from qrnca.models.device import resolve_device
from qrnca.models.loading import PromptEncoding, load_model
from qrnca.neurons.methods import not_applicable_reason
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import encoding, model_spec
from qrnca.workflow.provenance import model_provenance

with job(snakemake) as log:
    used, methods = snakemake.params.used, snakemake.params.used["methods"]
    spec = model_spec(used, snakemake.wildcards.model)
    settings = EvaluationSettings(
        unrelated_prompts=used["evaluation.unrelated_prompts"],
        unrelated_draws=used["evaluation.unrelated_draws"],
        seed=used["evaluation.seed"],
        chunk_size=execution_setting(snakemake, "evaluation.chunk_size"),
    )
    queries = read_dataset(snakemake.input.dataset)
    neurons, skipped = {}, {}
    for method, path in zip(methods, snakemake.input.neurons):
        rows = read_jsonl(path)
        reason = not_applicable_reason(rows, path)
        if reason:
            skipped[method] = reason
            log.info("%s does not apply to this model: %s", method, reason)
        else:
            neurons[method] = neuron_sets(rows, queries, source=path)
    enc = PromptEncoding.of(encoding(used))
    device = resolve_device(execution_setting(snakemake, "evaluation.device"))
    model, tokenizer = load_model(spec, device=device)
    run = evaluate(model, tokenizer, queries, neurons, settings, enc, skipped)
    extra = {"model": model_provenance(model, spec), "encoding": enc.as_dict()}
    write_evaluation(Path(snakemake.output.settings).parent, run, settings, extra=extra)
    log.info("evaluation stats: %s", run.stats)
    stats = {k: v for k, v in run.stats.items() if k not in TIMING_STATS}
    log.extra.update(extra, device=str(device), stats=stats,
                     timing={k: run.stats[k] for k in TIMING_STATS if k in run.stats})
