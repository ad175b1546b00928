# From stored attributions to ranked neuron lists (CPU only), and Table 3.


rule select_qrnca:
    """QRNCA (threshold, cluster, NA, ICA, common neurons, top-v) and its two ablations."""
    input:
        shards=attribution_shards,
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("select_qrnca"),
    output:
        qrnca=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca.jsonl",
        no_ica=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca_no_ica.jsonl",
        with_common=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca_with_common.jsonl",
        common=f"{RESULTS}/{{model}}/{{dataset}}/neurons/common.json",
        clusters=f"{RESULTS}/{{model}}/{{dataset}}/neurons/cluster_scores.jsonl",
    log:
        f"{RESULTS}/logs/select_qrnca/{{model}}/{{dataset}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("select_qrnca"),
    script:
        "../workflow_scripts/select_qrnca.py"


rule baseline_neurons:
    """A baseline's neurons, as many per query as QRNCA found for that query."""
    input:
        attribution=attribution_shards,
        qrnca=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca.jsonl",
        dataset=lambda wc: dataset_file(wc.dataset),
        code=library("baseline_neurons"),
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/neurons/{{baseline}}.jsonl",
    log:
        f"{RESULTS}/logs/baseline_neurons/{{model}}/{{dataset}}/{{baseline}}.log",
    wildcard_constraints:
        baseline="|".join(BASELINE_METHODS),
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("baseline_neurons"),
    script:
        "../workflow_scripts/baseline_neurons.py"


rule table3:
    """Table 3: mean number of QR neurons per query, per domain and language, beside the paper."""
    input:
        qrnca=qrnca_files,
        datasets=[dataset_file(d) for d in DATASETS],
        code=library("table3"),
    output:
        report(
            f"{RESULTS}/{{model}}/tables/table3_qr_neurons.csv",
            caption="../report/table3.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/table3/{{model}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        used=used("table3"),
    script:
        "../workflow_scripts/table3.py"
