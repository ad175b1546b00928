"""Running the workflow from tests: copies of the repository's workflow, the Snakemake CLI in a
subprocess, and reading its dry-run plans. Shared by every test that runs the demo.

A copy holds the workflow files and the `qrnca` package itself, and Snakemake runs with the
copy first on PYTHONPATH: like a fresh clone, the library files that the rules list as inputs
(`qrnca.workflow.code_deps`) live inside the workdir, so a test can edit one without touching the
repository.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The real raw MMLU / mLAMA files beside the repository (tests that need them skip without).
SHARED = Path(os.environ.get("QRNCA_SHARED_DATA") or REPO.parent / "shared" / "data")
WORKFLOW_FILES = ["Snakefile", "rules", "config", "workflow_scripts", "report", "envs", "slurm",
                  "qrnca"]
MODEL = "demo-tiny"
DATASETS = ["demo-domain", "demo-language"]
DEMO = ["--configfile", "config/demo.yaml"]


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def workflow_env(workdir: Path, env: dict | None = None) -> dict:
    """The environment of a Snakemake run in `workdir`: its own copy of `qrnca` first."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(workdir), *filter(None, [out.get("PYTHONPATH")])])
    out.update(env or {})
    return out


def snakemake(workdir: Path, *args: str, timeout: float = 1500,
              env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, text=True,
                          capture_output=True, timeout=timeout, env=workflow_env(workdir, env))


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def planned(workdir: Path, *args: str) -> set[str]:
    """The rules a dry run plans (`-n`, without taking the lock, so dry runs can overlap)."""
    run = snakemake(workdir, *args, "-n", "--nolock", timeout=600)
    assert run.returncode == 0, (args, run.stdout[-2000:], run.stderr[-3000:])
    return set(job_counts(run.stdout))


def rule_graph(workdir: Path, *args: str) -> dict[str, set[str]]:
    """{rule: the rules that consume its outputs} from `--rulegraph`."""
    run = snakemake(workdir, *args, "--rulegraph", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', run.stdout, re.M))
    graph = {name: set() for name in names.values()}
    for src, dst in re.findall(r"^\s*(\d+) -> (\d+)", run.stdout, re.M):
        graph[names[src]].add(names[dst])
    return graph


def downstream(graph: dict[str, set[str]], rules: set[str]) -> set[str]:
    """`rules` and every rule downstream of them."""
    out, todo = set(), list(rules)
    while todo:
        rule = todo.pop()
        if rule not in out:
            out.add(rule)
            todo += graph.get(rule, ())
    return out


def rule_scripts(workdir: Path = REPO) -> dict[str, str]:
    """{rule: the workflow script it runs}, read from the rule files."""
    out = {}
    for smk in sorted((workdir / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^rule (\w+):(.*?)(?=^rule |\Z)", text, re.S | re.M):
            script = re.search(r'"\.\./workflow_scripts/(\w+)\.py"', m.group(2))
            if script:
                out[m.group(1)] = script.group(1)
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
