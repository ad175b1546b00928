"""What a workflow script makes of its params: the model spec, prompt encoding and dataset spec
the library functions take.

A rule's params are the config values its results depend on, keyed by their schema paths
(`qrnca.workflow.config_usage.rule_params`, e.g. {"attribution.steps": 16, "models[].dtype": "float32"}).
Kept apart from `qrnca.workflow.config_usage` (which only the rule files read) so that a script's library
dependencies (`qrnca.workflow.code_deps`) do not include the usage table: editing it changes params, and
through them reruns exactly the rules concerned.
"""

from __future__ import annotations

from typing import Mapping


def model_spec(params: Mapping, name: str) -> dict:
    """The spec `qrnca.models.loading.load_model` takes, from a job's params (`dtype`: the value in use,
    e.g. the attribution's override)."""
    dtype = params.get("models[].dtype", params.get("attribution.dtype|models[].dtype"))
    return {"name": name, "hf_id": params.get("models[].hf_id"),
            "revision": params.get("models[].revision"), "path": params.get("models[].path"),
            "dtype": dtype or "float32"}


def encoding(params: Mapping) -> dict:
    """The prompt encoding (`qrnca.models.loading.PromptEncoding.of`) from a job's params."""
    return {"answer_token": params["models[].answer_token|answer_token"],
            "prompt_format": params["models[].prompt_format|prompt_format"]}


def dataset_spec(params: Mapping, name: str, prefix: str = "datasets[].") -> dict:
    """A dataset spec (`qrnca.datasets.build_from_spec`) from a job's params (or one entry of
    a train_demo_model job's `heldout`)."""
    spec = {"name": name}
    for key, value in params.items():
        if key.startswith(prefix):
            spec[key[len(prefix):].split("|")[0]] = value
    return spec
