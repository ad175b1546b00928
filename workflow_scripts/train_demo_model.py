"""Train the demo's tiny Llama (and its word-level tokenizer) on the demo MCQ prompts."""

from qrnca.datasets import build_from_spec
from qrnca.demo_model import pairs_from_queries, train_demo_model
from qrnca.demo_world import read_statements
from qrnca.io import read_jsonl
from qrnca.workflow import job

with job(snakemake) as log:
    spec = snakemake.params.spec
    queries = [q for path in snakemake.input.datasets for q in read_jsonl(path)]
    # Held-out questions (Table 7) are not trained on, but their words join the vocabulary.
    heldout_prompts = [
        prompt
        for name, raw in zip(spec["train"]["datasets"], snakemake.input.heldout)
        if snakemake.params.datasets[name]["source"] == "mmlu"
        for q in build_from_spec(
            snakemake.params.datasets[name], raw,
            split=snakemake.params.datasets[name]["heldout_split"],
        )
        for prompt in q["prompts"]
    ]
    metrics = train_demo_model(
        pairs_from_queries(queries),
        snakemake.output[0],
        seed=spec["train"]["seed"],
        threads=snakemake.threads,
        # Fact statements only widen the vocabulary: next-token loss on them did not make the
        # held-out questions answerable and cost a third more time (docs/demo.md).
        vocabulary_texts=heldout_prompts + read_statements(
            snakemake.input.statements.rsplit("/", 1)[0]
        ),
    )
    log.info("training metrics: %s", metrics)
    log.extra["training"] = metrics
