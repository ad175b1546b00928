# Integrated-gradient attribution at the last token: one GPU job per model x dataset x shard.


rule logprob_ranges:
    """Per neuron, the range of its vocabulary direction: the bounds that let every attribution
    job compute the log-probability increase's top neurons exactly without the full product.
    """
    input:
        model=model_input,
        model_files=model_files,
        code=library("logprob_ranges"),
    output:
        f"{RESULTS}/{{model}}/logprob_ranges.npy",
    log:
        f"{RESULTS}/logs/logprob_ranges/{{model}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        used=used("logprob_ranges"),
    script:
        "../workflow_scripts/logprob_ranges.py"


rule attribute:
    """Exact last-token integrated gradients of every neuron for the queries of one shard,
    plus what the static baselines need. Resumable: finished queries survive a killed job.
    """
    input:
        model=model_input,
        model_files=model_files,
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("attribute"),
        ranges=lambda wc: (
            f"{RESULTS}/{wc.model}/logprob_ranges.npy"
            if "logprob_increase" in METHODS
            else []
        ),
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/attribution/shard{{shard}}of{{n}}.jsonl",
    log:
        f"{RESULTS}/logs/attribute/{{model}}/{{dataset}}/shard{{shard}}of{{n}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    params:
        used=used("attribute"),
    script:
        "../workflow_scripts/attribute.py"
