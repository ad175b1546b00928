"""Train the demo's tiny Llama (and its word-level tokenizer) on the demo MCQ prompts."""

from pathlib import Path

from qrnca.datasets import build_from_spec
from qrnca.demo.model import train_demo_from_datasets
from qrnca.workflow.job import execution_setting, job
from qrnca.workflow.params import dataset_spec

with job(snakemake) as log:
    used = snakemake.params.used
    # Held-out questions (Table 7) are not trained on, but their words join the vocabulary, as do
    # the world's fact statements (next-token loss on them did not help; docs/demo.md).
    raw = dict(zip(used["models[].train.datasets"], snakemake.input.heldout))
    heldout_prompts = []
    for name, keys in used["heldout"].items():
        spec = dataset_spec(keys, name)
        spec["verify_checksums"] = execution_setting(snakemake, "datasets[].verify_checksums",
                                                     dataset=name)
        for q in build_from_spec(spec, raw[name], split=spec["heldout_split"]):
            heldout_prompts += q["prompts"]
    metrics = train_demo_from_datasets(
        snakemake.input.datasets,
        snakemake.output[0],
        world_root=Path(snakemake.input.statements).parent,
        vocabulary_texts=heldout_prompts,
        seed=used["models[].train.seed"],
        threads=snakemake.threads,
    )
    log.info("training metrics: %s", metrics)
    log.extra["timing"] = {"seconds": metrics.pop("seconds", None)}
    log.extra["training"] = metrics
