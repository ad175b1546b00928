"""Neuron-based and prompt-based predictions on one domain dataset's held-out questions."""

from qrnca.consistency import check_records
from qrnca.datasets import build_from_spec
from qrnca.datasets.queries import read_dataset
from qrnca.evaluation.prediction import domain_neurons, neuron_based_predictions, write_predictions
from qrnca.io import read_jsonl
from qrnca.models.device import resolve_device
from qrnca.models.loading import PromptEncoding, load_model
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import dataset_spec, encoding, model_spec
from qrnca.workflow.provenance import model_provenance

with job(snakemake) as log:
    used = snakemake.params.used
    spec = model_spec(used, snakemake.wildcards.model)
    dataset = dataset_spec(used, snakemake.wildcards.dataset)
    dataset["verify_checksums"] = execution_setting(snakemake, "datasets[].verify_checksums")
    qrnca = read_jsonl(snakemake.input.qrnca)
    check_records(qrnca, read_dataset(snakemake.input.dataset), snakemake.input.qrnca,
                  what="QRNCA neurons")
    heldout = build_from_spec(dataset, snakemake.input.raw, split=dataset["heldout_split"])
    device = resolve_device(execution_setting(snakemake, "evaluation.device"))
    model, tokenizer = load_model(spec, device=device)
    records = neuron_based_predictions(
        model,
        tokenizer,
        heldout,
        domain_neurons(qrnca),
        encoding=PromptEncoding.of(encoding(used)),
        progress=True,
    )
    write_predictions(snakemake.output[0], records)
    log.info("%d held-out prompts", len(records))
    log.extra["model"] = model_provenance(model, spec)
