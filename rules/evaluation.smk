# Boost / suppress interventions at the last token, PCR (Table 4), editing (Table 6), Figs. 3-4.


rule evaluate:
    """Every method's neurons boosted and suppressed on related and unrelated prompts; each
    prompt's prefix is computed once for all methods."""
    input:
        model=model_input,
        dataset=lambda wc: dataset_file(wc.dataset),
        neurons=expand(
            "{results}/{{model}}/{{dataset}}/neurons/{method}.jsonl",
            results=RESULTS,
            method=METHODS,
        ),
        model_files=model_files,
        code=library("evaluate"),
    output:
        records=expand(
            "{results}/{{model}}/{{dataset}}/evaluation/{method}.jsonl",
            results=RESULTS,
            method=METHODS,
        ),
        settings=f"{RESULTS}/{{model}}/{{dataset}}/evaluation/settings.json",
    log:
        f"{RESULTS}/logs/evaluate/{{model}}/{{dataset}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    params:
        used=used("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"


rule table4:
    """Table 4: probability change ratio (PCR) per method and dataset, beside the paper."""
    input:
        evaluation=evaluation_files,
        datasets=[dataset_file(d) for d in DATASETS],
        code=library("table4"),
    output:
        report(
            f"{RESULTS}/{{model}}/tables/table4_pcr.csv",
            caption="../report/table4.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/table4/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("table4"),
    script:
        "../workflow_scripts/table4.py"


rule table6:
    """Table 6: how often boosting / suppressing a query's neurons flips the predicted option."""
    input:
        evaluation=evaluation_files,
        datasets=[dataset_file(d) for d in DATASETS],
        code=library("table6"),
    output:
        report(
            f"{RESULTS}/{{model}}/tables/table6_editing.csv",
            caption="../report/table6.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/table6/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("table6"),
    script:
        "../workflow_scripts/table6.py"


rule fig3:
    """Figures 3 / 4: related vs unrelated probability change per group, one operation."""
    input:
        evaluation=f"{RESULTS}/{{model}}/{{dataset}}/evaluation/qrnca.jsonl",
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("fig3"),
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig3_{{op}}_{{dataset}}.pdf",
            caption="../report/fig3.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig3_{{op}}_{{dataset}}.png",
    log:
        f"{RESULTS}/logs/fig3/{{model}}/{{op}}_{{dataset}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("fig3"),
    script:
        "../workflow_scripts/fig3.py"
