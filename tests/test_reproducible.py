"""Reproducible by construction, on the finished demo: nothing stale, nothing silently mixed, every
bad input named, the same bytes on a second run, recovery after a kill.

Each scenario changes a copy of the session's demo run (`demo_copy`) and drives Snakemake through
its CLI, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from demo_workflow import (DATASETS, DEMO, MODEL, REPO, copy_workflow, downstream, job_counts,
                           planned, rule_graph, rule_scripts, snakemake, workflow_env)
from qrnca.io import DIR_MODE, OUTPUT_MODE
from qrnca.workflow.code_deps import module_of, script_dependencies
from result_comparison import compare_results

pytestmark = pytest.mark.slow

DOMAIN = DATASETS[0]
SHARD = f"results/{MODEL}/{DOMAIN}/attribution/shard0of2.jsonl"


def _log(work: Path, rule: str, *parts: str) -> str:
    return (work / "results/logs" / rule / Path(*parts)).read_text()


def test_two_fresh_runs_write_identical_results(demo, tmp_path):
    """A second run of the demo in a fresh copy: every file under results/ is byte-identical,
    except the logs and the provenance records' timing fields (tests/result_comparison.py)."""
    second = copy_workflow(tmp_path / "second")
    run = snakemake(second, *DEMO, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    assert compare_results(demo / "results", second / "results") == []


def test_every_output_has_one_permission(demo):
    files, folders = {}, {}
    for root, dirs, names in os.walk(demo / "results"):
        for name in dirs:
            folders[os.path.join(root, name)] = os.stat(os.path.join(root, name)).st_mode & 0o777
        for name in names:
            files[os.path.join(root, name)] = os.stat(os.path.join(root, name)).st_mode & 0o777
    assert {p: oct(m) for p, m in files.items() if m != OUTPUT_MODE} == {}
    assert {p: oct(m) for p, m in folders.items() if m != DIR_MODE} == {}


def test_a_plain_rerun_after_a_kill_regenerates_the_missing_shard_and_resumes(demo, demo_copy):
    """Kill a run mid-attribution (SIGKILL: the lock stays, the shard is gone, its partial file
    holds the finished queries). `--until attribute` and a plain run both plan the shard again;
    the run needs `--unlock` first (as the README says), then resumes and ends with results
    identical to the uninterrupted run's."""
    work = demo_copy
    partial = work / (SHARD + ".partial")
    job = subprocess.Popen([sys.executable, "-m", "snakemake", *DEMO, "--cores", "1", "-f", SHARD],
                           cwd=work, env=workflow_env(work), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and job.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert job.poll() is None, "the forced attribution finished before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (work / SHARD).exists() and partial.exists()

    assert "attribute" in planned(work, *DEMO, "--until", "attribute")
    assert job_counts(snakemake(work, *DEMO, "-n", "--nolock").stdout).get("attribute") == 1
    locked = snakemake(work, *DEMO, "--cores", "2")
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert snakemake(work, *DEMO, "--unlock").returncode == 0
    run = snakemake(work, *DEMO, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    assert re.search(r"resuming, \d+ of 36 queries already finished",
                     _log(work, "attribute", MODEL, DOMAIN, "shard0of2.log"))
    assert not list((work / "results").rglob("*.partial*"))
    assert compare_results(demo / "results", work / "results") == []


def test_a_shard_cut_at_a_line_boundary_stops_selection_naming_the_ids(demo_copy):
    work = demo_copy
    shard = work / f"results/{MODEL}/{DOMAIN}/attribution/shard1of2.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    lost = [json.loads(line)["id"] for line in lines[-2:]]
    shard.write_text("".join(lines[:-2]))
    target = f"results/{MODEL}/{DOMAIN}/neurons/qrnca.jsonl"
    run = snakemake(work, *DEMO, "--cores", "1", target)
    assert run.returncode != 0
    log = _log(work, "select_qrnca", MODEL, f"{DOMAIN}.log")
    assert (f"shard1of2.jsonl: attribution records (shard 1 of 2) do not match the dataset "
            f"(missing 2 of 36 queries: {lost[0]!r}, {lost[1]!r})") in log
    assert not (work / target).exists()  # nothing built from it


def test_a_nan_probability_stops_the_tables_naming_file_and_query(demo_copy):
    work = demo_copy
    path = work / f"results/{MODEL}/{DOMAIN}/evaluation/random.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[4]["p1"] = float("nan")
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    target = f"results/{MODEL}/tables/table4_pcr.csv"
    run = snakemake(work, *DEMO, "--cores", "1", target)
    assert run.returncode != 0
    assert (f"random.jsonl, record 5: p1 = nan for query {records[4]['id']!r}"
            in _log(work, "table4", f"{MODEL}.log"))
    assert not (work / target).exists()


def test_editing_a_library_function_reruns_exactly_the_rules_that_use_it(demo_copy):
    work = demo_copy
    graph = rule_graph(work, *DEMO)
    scripts = rule_scripts(work)
    for module in ("outputs.plots", "neurons.selection"):
        users = {rule for rule, script in scripts.items()
                 if f"qrnca.{module}" in {module_of(f) for f in script_dependencies(
                     REPO / "workflow_scripts" / f"{script}.py")}}
        expected = downstream(graph, users) | {"all"}
        edited = work / "qrnca" / f"{module.replace('.', '/')}.py"
        original, mtime = edited.read_bytes(), edited.stat().st_mtime_ns
        edited.write_text(original.decode() + "\n# an edit\n")
        assert planned(work, *DEMO) == expected, module
        edited.write_bytes(original)
        os.utime(edited, ns=(mtime, mtime))  # as before the edit
    assert "attribute" not in expected and "select_qrnca" in expected
    infrastructure = work / "qrnca" / "workflow" / "provenance.py"
    infrastructure.write_text(infrastructure.read_text() + "\n# an edit\n")
    assert planned(work, *DEMO) == set()


def test_in_place_edits_of_local_inputs_rerun_their_consumers(demo_copy):
    """Raw data, a model and instruction templates from local folders named in the config:
    editing one file inside them reruns exactly their consumers."""
    import shutil

    work = demo_copy
    local = work / "local"
    shutil.copytree(work / "results/demo_world/mmlu", local / "mmlu")
    shutil.copytree(work / "results/demo_world/mlama", local / "mlama")
    (local / "mlama/instructions.json").rename(local / "instructions.json")
    shutil.copytree(work / "results/models/demo-tiny", local / "model")
    config = yaml.safe_load((work / "config/demo.yaml").read_text())
    config["models"] = [{"name": MODEL, "path": "local/model", "dtype": "float32"}]
    domain, language = config["datasets"]
    domain["raw"] = "local/mmlu"
    language.update(raw="local/mlama", instructions="local/instructions.json")
    (work / "local.yaml").write_text(yaml.safe_dump(config))
    args = ["--configfile", "config/demo.yaml", "local.yaml"]
    targets = [f"results/{MODEL}/{d}/accuracy.csv" for d in DATASETS]
    run = snakemake(work, *args, "--cores", "2", *targets)
    assert run.returncode == 0, run.stderr[-4000:]
    assert planned(work, *targets, *args) == set()

    def edit(path: Path, old: str = "}", new: str = "}\n"):
        """An edit in place (the same bytes saved again are no change to Snakemake)."""
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1) if old != "}" else text + "\n")

    edit(local / "mmlu/test/high_school_biology_test.csv", "?,", " ?,")
    assert job_counts(snakemake(work, *targets, *args, "-n").stdout) == {
        "build_dataset": 1, "score_accuracy": 1}
    run = snakemake(work, *args, "--cores", "2", *targets)
    assert run.returncode == 0, run.stderr[-4000:]

    edit(local / "model/config.json")
    assert job_counts(snakemake(work, *targets, *args, "-n").stdout) == {"score_accuracy": 2}
    assert snakemake(work, *args, "--cores", "2", *targets).returncode == 0

    edit(local / "instructions.json")
    assert job_counts(snakemake(work, *targets, *args, "-n").stdout) == {
        "build_dataset": 1, "score_accuracy": 1}


def _readme_commands() -> list[str]:
    """The command lines of the README's bash blocks (comments dropped)."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_readme_commands_name_the_venv_tools():
    for line in _readme_commands():
        for tool in ("snakemake", "qrnca-lineage", "pytest", "snakefmt", "hf", "python"):
            for m in re.finditer(rf"(^|[\s;&|]){re.escape(tool)}(\s|$)", line):
                assert False, f"README runs {tool!r} off PATH: {line}"


def test_readme_demo_commands_run_verbatim(demo_copy):
    """Every README command about the finished demo, verbatim (the venv's tools are this test's
    interpreter's), in a copy of the demo: rerunning figures, a parameter change, auditing,
    the report, and the recovery after a kill."""
    work = demo_copy
    bin_dir = str(Path(sys.executable).parent) + "/"
    commands = [line for line in _readme_commands()
                if "config/demo.yaml" in line or "qrnca-lineage" in line
                or line.startswith("printf")]
    commands = [c for c in commands if "pip install" not in c and "-R select_qrnca" not in c]
    assert len(commands) >= 10, commands
    env = workflow_env(work)
    for line in commands:
        run = subprocess.run(line.replace(".venv/bin/", bin_dir), shell=True, cwd=work, env=env,
                             text=True, capture_output=True, timeout=900)
        assert run.returncode == 0, (line, run.stdout[-2000:], run.stderr[-3000:])
    # -R select_qrnca reruns half the workflow: dry-run it
    line = next(c for c in _readme_commands() if "-R select_qrnca" in c)
    run = subprocess.run(line.replace(".venv/bin/", bin_dir) + " -n", shell=True, cwd=work,
                         env=env, text=True, capture_output=True, timeout=600)
    assert run.returncode == 0 and "select_qrnca" in job_counts(run.stdout)
