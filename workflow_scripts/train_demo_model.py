"""Train the demo's tiny Llama (and its word-level tokenizer) on the demo MCQ prompts."""

from pathlib import Path

from qrnca.datasets import build_from_spec
from qrnca.demo_model import train_demo_from_datasets
from qrnca.workflow import job

with job(snakemake) as log:
    spec, datasets = snakemake.params.spec, snakemake.params.datasets
    # Held-out questions (Table 7) are not trained on, but their words join the vocabulary, as do
    # the world's fact statements (next-token loss on them did not help; docs/demo.md).
    heldout_prompts = [
        prompt
        for name, raw in zip(spec["train"]["datasets"], snakemake.input.heldout)
        if datasets[name]["source"] == "mmlu"
        for q in build_from_spec(datasets[name], raw, split=datasets[name]["heldout_split"])
        for prompt in q["prompts"]
    ]
    metrics = train_demo_from_datasets(
        snakemake.input.datasets,
        snakemake.output[0],
        world_root=Path(snakemake.input.statements).parent,
        vocabulary_texts=heldout_prompts,
        seed=spec["train"]["seed"],
        threads=snakemake.threads,
    )
    log.info("training metrics: %s", metrics)
    log.extra["training"] = metrics
