# Raw inputs (pinned downloads or local copies), the demo world, and the MCQ datasets.


localrules:
    fetch_raw,
    fetch_released,


rule fetch_raw:
    """Download a pinned raw release (MMLU CSVs or mLAMA 1.1) and check every file's sha256."""
    input:
        code=library("fetch_raw"),
    output:
        directory("resources/raw/{source}"),
    log:
        "resources/logs/fetch_raw_{source}.log",
    wildcard_constraints:
        source="mmlu|mlama",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/fetch_raw.py"


rule fetch_released:
    """Download one of the paper's released datasets (qrneuron @ dd8142d), sha256-checked."""
    input:
        code=library("fetch_raw"),
    output:
        "resources/raw/released/{file}",
    log:
        "resources/logs/fetch_released_{file}.log",
    wildcard_constraints:
        file="subject_qa.json|language_qa.json",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/fetch_raw.py"


rule demo_world:
    """Write the demo's synthetic world in the raw MMLU CSV and mLAMA JSONL formats."""
    input:
        code=library("demo_world"),
    output:
        mmlu=directory(f"{RESULTS}/demo_world/mmlu"),
        mlama=directory(f"{RESULTS}/demo_world/mlama"),
        statements=f"{RESULTS}/demo_world/statements.txt",
    log:
        f"{RESULTS}/logs/demo_world.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("demo_world"),
    script:
        "../workflow_scripts/demo_world.py"


rule build_dataset:
    """Turn a raw source into multiple-choice queries: 3 templates, gold letter per template."""
    input:
        raw=raw_input,
        raw_files=raw_files,
        instructions=instructions_input,
        code=library("build_dataset"),
    output:
        f"{RESULTS}/datasets/{{dataset}}.jsonl",
    log:
        f"{RESULTS}/logs/datasets/{{dataset}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("build_dataset"),
    script:
        "../workflow_scripts/build_dataset.py"
