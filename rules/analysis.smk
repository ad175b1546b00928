# Analyses of the QR neurons (CPU): Figures 2a, 2b and 5.


rule fig2a:
    """Figure 2a: overlap between the QR-neuron sets of each pair of groups, per dataset."""
    input:
        qrnca=qrnca_files,
        datasets=[dataset_file(d) for d in DATASETS],
        code=library("fig2a"),
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig2a_overlap.pdf",
            caption="../report/fig2a.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig2a_overlap.png",
        csv=f"{RESULTS}/{{model}}/tables/fig2a_overlap.csv",
    log:
        f"{RESULTS}/logs/fig2a/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("fig2a"),
    script:
        "../workflow_scripts/fig2a.py"


rule fig2b:
    """Figure 2b: number of QR neurons per layer, per dataset."""
    input:
        qrnca=qrnca_files,
        clusters=lambda wc: expand(
            "{results}/{model}/{dataset}/neurons/cluster_scores.jsonl",
            results=RESULTS,
            model=wc.model,
            dataset=DATASETS,
        ),
        datasets=[dataset_file(d) for d in DATASETS],
        code=library("fig2b"),
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig2b_layers.pdf",
            caption="../report/fig2b.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig2b_layers.png",
        csv=f"{RESULTS}/{{model}}/tables/fig2b_layers.csv",
    log:
        f"{RESULTS}/logs/fig2b/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("fig2b"),
    script:
        "../workflow_scripts/fig2b.py"


rule fig5:
    """Figure 5: NA x ICA accumulated per group on the layer x neuron-index grid."""
    input:
        clusters=f"{RESULTS}/{{model}}/{{dataset}}/neurons/cluster_scores.jsonl",
        code=library("fig5"),
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig5_heatmap_{{dataset}}.pdf",
            caption="../report/fig5.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig5_heatmap_{{dataset}}.png",
    log:
        f"{RESULTS}/logs/fig5/{{model}}/{{dataset}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("fig5"),
    script:
        "../workflow_scripts/fig5.py"


rule table5_common_tokens:
    """Table 5: top vocabulary tokens of each common neuron's down-projection column."""
    input:
        model=model_input,
        model_files=model_files,
        common=f"{RESULTS}/{{model}}/{{dataset}}/neurons/common.json",
        code=library("table5"),
    output:
        table=report(
            f"{RESULTS}/{{model}}/tables/table5_common_tokens_{{dataset}}.csv",
            caption="../report/table5.rst",
            category="Tables",
        ),
        summary=f"{RESULTS}/{{model}}/tables/table5_common_tokens_{{dataset}}.json",
    log:
        f"{RESULTS}/logs/table5/{{model}}/{{dataset}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        used=used("table5_common_tokens"),
    script:
        "../workflow_scripts/table5.py"


rule predict_neurons:
    """Neuron-based vs prompt-based prediction on the held-out questions of each domain."""
    input:
        model=model_input,
        model_files=model_files,
        raw=raw_input,
        raw_files=raw_files,
        qrnca=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca.jsonl",
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("predict_neurons"),
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/prediction.jsonl",
    log:
        f"{RESULTS}/logs/predict_neurons/{{model}}/{{dataset}}.log",
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        used=used("predict_neurons"),
    script:
        "../workflow_scripts/predict_neurons.py"


rule table7:
    """Table 7: neuron-based vs prompt-based accuracy per domain, beside the paper."""
    input:
        predictions=lambda wc: expand(
            "{results}/{model}/{dataset}/prediction.jsonl",
            results=RESULTS,
            model=wc.model,
            dataset=mmlu_datasets(),
        ),
        code=library("table7"),
    output:
        report(
            f"{RESULTS}/{{model}}/tables/table7_prediction.csv",
            caption="../report/table7.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/table7/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("table7"),
    script:
        "../workflow_scripts/table7.py"


rule paper_comparison:
    """Every paper number beside ours (missing ones marked), then the paper's claims decided."""
    input:
        table3=expand(
            "{results}/{model}/tables/table3_qr_neurons.csv",
            results=RESULTS,
            model=MODELS,
        ),
        table4=expand(
            "{results}/{model}/tables/table4_pcr.csv", results=RESULTS, model=MODELS
        ),
        table6=expand(
            "{results}/{model}/tables/table6_editing.csv",
            results=RESULTS,
            model=MODELS,
        ),
        table7=(
            expand(
                "{results}/{model}/tables/table7_prediction.csv",
                results=RESULTS,
                model=MODELS,
            )
            if mmlu_datasets()
            else []
        ),
        fig2a=expand(
            "{results}/{model}/tables/fig2a_overlap.csv", results=RESULTS, model=MODELS
        ),
        fig2b=expand(
            "{results}/{model}/tables/fig2b_layers.csv", results=RESULTS, model=MODELS
        ),
        table5=expand(
            "{results}/{model}/tables/table5_common_tokens_{dataset}.json",
            results=RESULTS,
            model=MODELS,
            dataset=DATASETS,
        ),
        code=library("paper_comparison"),
    output:
        md=report(
            f"{RESULTS}/paper_comparison.md",
            caption="../report/paper_comparison.rst",
            category="Paper comparison",
        ),
        csv=f"{RESULTS}/paper_comparison.csv",
        claims=f"{RESULTS}/paper_claims.csv",
    log:
        f"{RESULTS}/logs/paper_comparison.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("paper_comparison"),
    script:
        "../workflow_scripts/paper_comparison.py"
