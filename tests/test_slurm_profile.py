"""The SLURM profile (slurm/config.yaml) drives the real executor plugin to the right sbatch flags.

A tiny workflow runs end to end through snakemake-executor-plugin-slurm against the stub SLURM in
tests/stubs (jobs really execute); the recorded sbatch argv per rule is the contract under test.
"""

from __future__ import annotations

import re

import pytest
import yaml

from slurm_stub_helpers import PROFILE, REPO, flag_value, rule_of, run_with_slurm_stubs

GPU_RULES = {"logprob_ranges", "attribute", "evaluate", "score_accuracy", "predict_neurons",
             "table5_common_tokens"}

TINY_WORKFLOW = """
rule all:
    input: "gpu.txt", "cpu.txt"

rule attribute:  # a GPU rule named as in the profile; fails once to exercise `retries`
    output: "gpu.txt"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    shell:
        "if [ ! -e first_attempt_failed ]; then touch first_attempt_failed; exit 1; fi; "
        "echo $SLURM_JOB_ID > {output}"

rule cpu_step:
    output: "cpu.txt"
    threads: 2
    shell: "echo cpu > {output}"
"""


def load_profile(env: dict) -> dict:
    """The profile as Snakemake sees it (YTE-rendered with `env`)."""
    import os

    import yte

    old = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("QRNCA_")]:
            del os.environ[k]  # the caller's site values must not leak into the test
        os.environ.update(env)
        with open(PROFILE / "config.yaml", encoding="utf-8") as fh:
            return yte.process_yaml(fh, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_wf")
    (workdir / "Snakefile").write_text(TINY_WORKFLOW)
    run = run_with_slurm_stubs(workdir, [], env={"QRNCA_SLURM_GPU_PARTITION": "gpuq"}, timeout=240)
    assert run.result.returncode == 0, run.output()[-4000:]
    return workdir, run


def test_gpu_rule_gets_model_gpu_memory_time_and_gpu_partition(tiny_run):
    workdir, run = tiny_run
    first, second = run.sbatch_for("attribute")
    assert "--gpus=v100:1" in first
    assert flag_value(first, "--mem") == "16000" and flag_value(first, "-t") == "120"
    assert flag_value(first, "-A") == "testacct" and flag_value(first, "-p") == "gpuq"
    # the retry (profile `retries: 1`) asks for the rule's attempt-scaled memory and time
    assert flag_value(second, "--mem") == "32000" and flag_value(second, "-t") == "240"
    assert "--gpus=v100:1" in second
    assert (workdir / "gpu.txt").read_text().strip() == str(run.jobs()[-1]["id"])


def test_cpu_rule_gets_no_gpu_and_the_small_defaults(tiny_run):
    workdir, run = tiny_run
    [cpu] = run.sbatch_for("cpu_step")
    assert not any(a.startswith(("--gpus", "--gres")) for a in cpu), cpu
    assert flag_value(cpu, "--mem") == "4000" and flag_value(cpu, "-t") == "60"
    assert flag_value(cpu, "-p") == "cpuq" and flag_value(cpu, "-A") == "testacct"
    assert "--cpus-per-task=2" in cpu
    assert (workdir / "cpu.txt").read_text() == "cpu\n"


def test_jobs_really_ran_through_sbatch_and_srun(tiny_run):
    _, run = tiny_run
    assert sorted(j["state"] for j in run.jobs()) == ["COMPLETED", "COMPLETED", "FAILED"]
    srun = [c["argv"] for c in run.calls if c["cmd"] == "srun"]
    assert len(srun) == 3, "the jobstep plugin runs each job's rule through srun"
    assert sum("--gpus=1" in argv for argv in srun) == 2
    assert {rule_of(a) for a in run.sbatch} == {"attribute", "cpu_step"}


@pytest.fixture
def dry_workdir(tmp_path):
    (tmp_path / "Snakefile").write_text(TINY_WORKFLOW)
    return tmp_path


def test_unset_site_variable_stops_with_its_name(dry_workdir):
    run = run_with_slurm_stubs(dry_workdir, ["-n"], env={"QRNCA_SLURM_PARTITION": None}, timeout=120)
    assert run.result.returncode != 0
    assert "environment variable QRNCA_SLURM_PARTITION is not set" in run.output()
    assert run.sbatch == []


def test_gpu_model_and_empty_account_from_the_environment(dry_workdir):
    run = run_with_slurm_stubs(dry_workdir, ["-n"],
                               env={"QRNCA_GPU_MODEL": "a100", "QRNCA_SLURM_ACCOUNT": ""}, timeout=120)
    assert run.result.returncode == 0, run.output()[-3000:]
    out = run.output()
    assert re.search(r"gpu=1, gpu_model=a100", out)
    assert "slurm_account=," in out, "an empty account is passed on empty (SLURM picks the default)"


def test_profile_keys():
    profile = load_profile({"QRNCA_SLURM_ACCOUNT": "acc", "QRNCA_SLURM_PARTITION": "part"})
    assert profile["executor"] == "slurm"
    assert int(profile["jobs"]) > 0 and int(profile["latency-wait"]) >= 30
    assert int(profile["retries"]) in (1, 2)
    assert "software-deployment-method" not in profile and "sdm" not in profile
    # sacct reports a scancel-ed job as "CANCELLED by <uid>", which plugin 2.8.0 waits on forever
    # (seen on the real cluster, tests/test_slurm_real.py); squeue reports CANCELLED
    assert profile["slurm-status-command"] == "squeue"
    defaults = profile["default-resources"]
    assert defaults["slurm_account"] == "'acc'" and defaults["slurm_partition"] == "'part'"
    assert "gpu_model" not in defaults and "gpu" not in defaults, \
        "a gpu_model default would make the plugin request a GPU for every job"
    assert set(profile["set-resources"]) == GPU_RULES
    for rule, res in profile["set-resources"].items():
        assert res["gpu_model"] == "'v100'" and res["slurm_partition"] == "'part'", rule
        assert "mem_mb" not in res and "runtime" not in res, \
            f"{rule}: mem_mb/runtime belong in the rule, where they can scale with attempt"


def test_gres_mode_replaces_the_gpus_flag():
    profile = load_profile({"QRNCA_SLURM_ACCOUNT": "acc", "QRNCA_SLURM_PARTITION": "part",
                            "QRNCA_SLURM_GPU_PARTITION": "gpu", "QRNCA_SLURM_GRES": "gpu:v100:1"})
    for rule, res in profile["set-resources"].items():
        # gpu=0 keeps the plugin from adding --gpus=1 beside --gres (verified with the stubs)
        assert res == {"slurm_partition": "'gpu'", "gres": "'gpu:v100:1'", "gpu": 0}, rule


def gpu_rules_in_workflow() -> dict[str, bool]:
    """rule name -> whether its block declares gpu=<n>, from rules/*.smk (Snakemake has no
    stable API to list resources, and set-resources for a missing rule is silently accepted)."""
    rules = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        parts = re.split(r"^rule\s+(\w+)\s*:", text, flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            rules[name] = bool(re.search(r"^\s+gpu\s*=\s*[1-9]", body, flags=re.M))
    return rules


def test_profile_names_exactly_the_workflows_gpu_rules():
    rules = gpu_rules_in_workflow()
    if not rules:
        pytest.skip("no rules/*.smk yet")
    named = set(yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"])
    missing = sorted(named - set(rules))
    assert not missing, f"slurm/config.yaml set-resources names rules that do not exist: {missing}"
    unset = sorted(r for r, gpu in rules.items() if gpu and r not in named)
    assert not unset, f"GPU rules without gpu_model/partition in slurm/config.yaml: {unset}"
