"""Neuron-based and prompt-based predictions on one domain dataset's held-out questions."""

from qrnca.datasets import build_from_spec
from qrnca.device import resolve_device
from qrnca.io import read_jsonl
from qrnca.models import PromptEncoding, load_model
from qrnca.prediction import domain_neurons, neuron_based_predictions, write_predictions
from qrnca.provenance import model_provenance
from qrnca.workflow import job

with job(snakemake) as log:
    spec, dataset = snakemake.params.spec, snakemake.params.dataset
    heldout = build_from_spec(dataset, snakemake.input.raw, split=dataset["heldout_split"])
    model, tokenizer = load_model(spec, device=resolve_device(snakemake.params.device))
    neurons = domain_neurons(read_jsonl(snakemake.input.qrnca))
    records = neuron_based_predictions(
        model,
        tokenizer,
        heldout,
        neurons,
        encoding=PromptEncoding.of(snakemake.params.encoding),
        progress=True,
    )
    write_predictions(snakemake.output[0], records)
    log.info("%d held-out prompts", len(records))
    log.extra["model"] = model_provenance(model, spec)
