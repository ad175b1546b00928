"""Boost and suppress every method's neurons on related and unrelated prompts."""

from pathlib import Path

from qrnca.device import resolve_device
from qrnca.evaluation import EvaluationSettings, evaluate, neuron_sets, write_evaluation
from qrnca.io import read_jsonl
from qrnca.methods import not_applicable_reason
from qrnca.models import PromptEncoding, load_model
from qrnca.provenance import model_provenance
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    options = {k: v for k, v in snakemake.params.settings.items() if k != "device"}
    settings = EvaluationSettings.from_config(options)
    encoding = PromptEncoding.of(snakemake.params.encoding)
    device = resolve_device(snakemake.params.device)
    model, tokenizer = load_model(spec, device=device)
    queries = read_jsonl(snakemake.input.dataset)
    neurons, skipped = {}, {}
    for method, path in zip(snakemake.params.methods, snakemake.input.neurons):
        rows = read_jsonl(path)
        reason = not_applicable_reason(rows, path)
        if reason:
            skipped[method] = reason
            log.info("%s does not apply to this model: %s", method, reason)
        else:
            neurons[method] = neuron_sets(rows, queries, source=path)
    run = evaluate(model, tokenizer, queries, neurons, settings, encoding, skipped)
    extra = {
        "model": model_provenance(model, spec),
        "device": str(device),
        "encoding": encoding.as_dict(),
    }
    write_evaluation(Path(snakemake.output.settings).parent, run, settings, extra=extra)
    log.info("evaluation stats: %s", run.stats)
    log.extra.update(extra, stats=run.stats)
