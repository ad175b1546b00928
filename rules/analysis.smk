# Analyses of the QR neurons (CPU): Figures 2a, 2b and 5.


def qrnca_files(wildcards):
    return expand(
        "{results}/{model}/{dataset}/neurons/qrnca.jsonl",
        results=RESULTS,
        model=wildcards.model,
        dataset=DATASETS,
    )


rule fig2a:
    """Figure 2a: overlap between the QR-neuron sets of each pair of groups, per dataset."""
    input:
        qrnca_files,
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig2a_overlap.pdf",
            caption="../report/fig2a.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig2a_overlap.png",
        csv=f"{RESULTS}/{{model}}/tables/fig2a_overlap.csv",
    params:
        datasets=list(DATASETS),
        measure=config["analysis"]["overlap"],
    log:
        f"{RESULTS}/logs/fig2a/{{model}}.log",
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
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig2b_layers.pdf",
            caption="../report/fig2b.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig2b_layers.png",
        csv=f"{RESULTS}/{{model}}/tables/fig2b_layers.csv",
    params:
        datasets=list(DATASETS),
    log:
        f"{RESULTS}/logs/fig2b/{{model}}.log",
    script:
        "../workflow_scripts/fig2b.py"


rule fig5:
    """Figure 5: NA x ICA accumulated per group on the layer x neuron-index grid."""
    input:
        f"{RESULTS}/{{model}}/{{dataset}}/neurons/cluster_scores.jsonl",
    output:
        pdf=report(
            f"{RESULTS}/{{model}}/figures/fig5_heatmap_{{dataset}}.pdf",
            caption="../report/fig5.rst",
            category="Figures",
        ),
        png=f"{RESULTS}/{{model}}/figures/fig5_heatmap_{{dataset}}.png",
    params:
        bins=config["analysis"]["heatmap_bins"],
    log:
        f"{RESULTS}/logs/fig5/{{model}}/{{dataset}}.log",
    script:
        "../workflow_scripts/fig5.py"
