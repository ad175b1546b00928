# Integrated-gradient attribution at the last token: one GPU job per model x dataset x shard.


rule attribute:
    """Exact last-token integrated gradients of every neuron for the queries of one shard,
    plus what the static baselines need. Resumable: finished queries survive a killed job.
    """
    input:
        model=model_input,
        dataset=lambda wc: dataset_file(wc.dataset),
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
        spec=lambda wc: model_spec(wc.model),
        encoding=lambda wc: prompt_encoding(wc.model),
        settings=config["attribution"],
        logprob="logprob_increase" in METHODS,
    script:
        "../workflow_scripts/attribute.py"
