# From stored attributions to ranked neuron lists (CPU only), and Table 3.


rule select_qrnca:
    """QRNCA (threshold, cluster, NA, ICA, common neurons, top-v) and its two ablations."""
    input:
        attribution_shards,
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
        settings=config["selection"],
    script:
        "../workflow_scripts/select_qrnca.py"


rule baseline_neurons:
    """A baseline's neurons, as many per query as QRNCA found for that query."""
    input:
        attribution=attribution_shards,
        qrnca=f"{RESULTS}/{{model}}/{{dataset}}/neurons/qrnca.jsonl",
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/neurons/{{baseline}}.jsonl",
    log:
        f"{RESULTS}/logs/baseline_neurons/{{model}}/{{dataset}}/{{baseline}}.log",
    wildcard_constraints:
        baseline="knowledge_neuron|activation|random|logprob_increase",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=config["selection"],
    script:
        "../workflow_scripts/baseline_neurons.py"


rule table3:
    """Table 3: mean number of QR neurons per query, per domain and language, beside the paper."""
    input:
        expand(
            "{results}/{{model}}/{dataset}/neurons/qrnca.jsonl",
            results=RESULTS,
            dataset=DATASETS,
        ),
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
        datasets=list(DATASETS),
    script:
        "../workflow_scripts/table3.py"
