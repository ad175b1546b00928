"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/real_slurm.py).

What the stub tests (test_slurm_profile.py) cannot show: that SLURM accepts what the profile
submits, grants each GPU rule its GPU and every job its memory and time, runs each rule inside its
allocation (job step .0, started by the jobstep plugin's srun), and that failed jobs come back.
Three workflows run on the cluster at once:

- the whole demo through the profile (with the GPU rules' memory lowered for this small node);
  every job is checked in `sacct` against the resources Snakemake printed for it, and the results
  equal the local demo run's (conftest.py `demo`). One attribution job is cancelled (scancel) and
  another one's rule process killed on the node (SIGKILL, as by the OOM killer), each once it has
  finished a query; both are resubmitted (`retries: 1`, attempt 2) and resume their shard from
  its .partial file;
- a tiny workflow exceeds its memory (killed by SLURM) and its time limit (TIMEOUT); both jobs
  are resubmitted with the doubled values their rules ask for on attempt 2;
- one GPU rule with QRNCA_SLURM_GRES (clusters that take only --gres).

The cluster needs root (apt-get when the packages are missing). When it cannot be brought up
these tests fail with the reason; QRNCA_SKIP_REAL_SLURM=1 skips them on a developer machine
without root (CI must not set it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from demo_workflow import DATASETS, DEMO, MODEL, copy_workflow, job_counts, workflow_env
from qrnca.workflow.provenance import TIMING_FIELDS
from result_comparison import compare_results
from real_slurm import (ACCOUNT, CPU_PARTITION, GPU_PARTITION, GPU_TYPE, Cluster,
                        SlurmUnavailable, start_cluster)
from slurm_stub_helpers import PROFILE, profile_env, rule_from_comment

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SITE_ENV = {"QRNCA_SLURM_ACCOUNT": ACCOUNT, "QRNCA_SLURM_PARTITION": CPU_PARTITION,
            "QRNCA_SLURM_GPU_PARTITION": GPU_PARTITION, "QRNCA_GPU_MODEL": GPU_TYPE}
# This node has ~24 GB; the GPU rules ask for 32000 MB * attempt. A small site lowers that in
# the profile (small_node_profile); the assertions check that SLURM granted these values.
GPU_MEM_MB = 2500
JOB_FIELDS = ("JobID", "Comment", "Partition", "Account", "State", "ReqMem", "TimelimitRaw",
              "AllocTRES")
# Provenance fields that differ between a local run and a run through SLURM, beyond timing: the
# host and the executor's resources of each job.
CLUSTER_FIELDS = ("host", "resources")


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("QRNCA_SKIP_REAL_SLURM") == "1":
        pytest.skip("QRNCA_SKIP_REAL_SLURM=1: the real-SLURM tests are skipped")
    try:
        cluster = start_cluster()
    except SlurmUnavailable as exc:
        pytest.fail(f"could not bring up the test SLURM cluster: {exc}\n(without root, "
                    "QRNCA_SKIP_REAL_SLURM=1 skips these tests; CI must not set it)", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.layout.root, ignore_errors=True)


def small_node_profile(dest: Path, mem_mb: int = GPU_MEM_MB) -> Path:
    """slurm/ with the GPU rules' host memory lowered to `mem_mb` * attempt: what a site whose
    nodes have less memory adds to the `&gpu_job` block. (A command-line --set-resources would
    replace the profile's whole set-resources, GPU model and partition included.)"""
    text = (PROFILE / "config.yaml").read_text()
    anchor = "  attribute: &gpu_job\n"
    assert anchor in text, "slurm/config.yaml no longer defines the GPU rules' &gpu_job block"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(
        text.replace(anchor, f'{anchor}    mem_mb: "{mem_mb} * attempt"\n'))
    return dest


@dataclass
class Interruption:
    """Interrupt the running attribution job of one shard as soon as its .partial file holds a
    finished query: `scancel` the job (kind "cancel"), or SIGKILL the rule's own process in job
    step .0 on the node, as the kernel's OOM killer would (kind "kill_process")."""

    dataset: str
    shard: int
    kind: str
    n: int = 2
    job_id: str | None = None  # the attempt that was interrupted
    lines_done: int = 0  # finished queries in the .partial file when it was
    fired: bool = False
    _next_lookup: float = 0.0

    @property
    def partial(self) -> str:
        return f"results/{MODEL}/{self.dataset}/attribution/shard{self.shard}of{self.n}.jsonl.partial"

    @property
    def log(self) -> str:
        return f"results/logs/attribute/{MODEL}/{self.dataset}/shard{self.shard}of{self.n}.log"

    @property
    def comment(self) -> str:
        """The comment the plugin gives this shard's jobs (`rule_<rule>_wildcards_<values>`)."""
        return f"rule_attribute_wildcards_{MODEL}_{self.dataset}_{self.shard}_{self.n}"

    def poll(self, cluster: Cluster, workdir: Path) -> None:
        if self.fired:
            return
        if self.job_id is None:  # squeue at most once a second; a shard job runs for seconds
            if time.monotonic() < self._next_lookup:
                return
            self._next_lookup = time.monotonic() + 1
            running = dict(line.split("|", 1) for line in cluster.run(
                "squeue", "-h", "-t", "RUNNING", "-o", "%k|%i").split())
            self.job_id = running.get(self.comment)
            if self.job_id is None:
                return
        partial = workdir / self.partial
        self.lines_done = partial.read_bytes().count(b"\n") if partial.exists() else 0
        if self.lines_done < 1:
            return
        if self.kind == "cancel":
            cluster.run("scancel", self.job_id)
            self.fired = True
            return
        for line in cluster.run("scontrol", "listpids", f"{self.job_id}.0").splitlines()[1:]:
            pid = int(line.split()[0])
            with contextlib.suppress(OSError):  # a pid that has already gone
                if b"attribute.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)  # the script python the rule's step started
                    self.fired = True


@dataclass
class ClusterRun:
    """One `snakemake --profile <profile> <args>` in workdir on the cluster: its output and what
    SLURM accounted for it (sacct, after it ended)."""

    workdir: Path
    args: list[str]
    profile: Path = PROFILE
    env: dict[str, str] = field(default_factory=dict)  # beyond the cluster's and SITE_ENV
    interruptions: tuple[Interruption, ...] = ()
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0
    jobs: list[dict] = field(default_factory=list)  # one row per job
    steps: list[dict] = field(default_factory=list)  # one row per job step (<id>.batch, <id>.0)
    _proc: subprocess.Popen | None = None
    _started: float = 0.0

    @property
    def log(self) -> Path:
        return self.workdir / "snakemake.out"

    def start(self, cluster: Cluster) -> None:
        env = profile_env({**cluster.env, **SITE_ENV, **self.env,
                           "PYTHONPATH": workflow_env(self.workdir)["PYTHONPATH"]})
        cmd = [sys.executable, "-m", "snakemake", "--profile", str(self.profile),
               "--slurm-init-seconds-before-status-checks", "2", *self.args]
        with open(self.log, "w") as out:
            self._proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=out,
                                          stderr=subprocess.STDOUT)
        self._started = time.monotonic()

    def running(self, cluster: Cluster) -> bool:
        """Poll the interruptions; False once Snakemake has exited."""
        if self.returncode is not None:
            return False
        if self._proc.poll() is None:
            for interruption in self.interruptions:
                interruption.poll(cluster, self.workdir)
            return True
        self.returncode, self.seconds = self._proc.returncode, time.monotonic() - self._started
        return False

    def stop(self) -> None:
        """Stop Snakemake if it still runs (on SIGTERM it cancels its SLURM jobs)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def read_back(self, cluster: Cluster) -> None:
        self.output = self.log.read_text()
        if m := re.search(r"SLURM run ID: (\S+)", self.output):
            self.jobs = cluster.sacct("-X", "--name", m[1], fields=JOB_FIELDS)
        if self.jobs:
            steps = cluster.sacct("--jobs", ",".join(j["JobID"] for j in self.jobs),
                                  fields=("JobID", "JobName", "State", "AllocTRES"))
            self.steps = [s for s in steps if "." in s["JobID"]]

    def submissions(self) -> dict[str, dict]:
        """SLURM job id -> {"rule", "resources"} as Snakemake printed them for that submission."""
        by_jobid, out = {}, {}
        rule = jobid = None
        for line in self.output.splitlines():
            if m := re.match(r"^(?:local)?rule (\w+):$", line):
                rule, jobid = m[1], None
            elif m := re.match(r"^\s+jobid: (\d+)$", line):
                jobid = m[1]
            elif (m := re.match(r"^\s+resources: (.*)$", line)) and rule and jobid:
                by_jobid[jobid] = {"rule": rule, "resources": dict(
                    item.split("=", 1) for item in m[1].split(", "))}
            elif m := re.match(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", line):
                out[m[2]] = by_jobid[m[1]]
        return out

    def jobs_of(self, rule: str) -> list[dict]:
        return [j for j in self.jobs if rule_from_comment(j["Comment"]) == rule]


def state(job: dict) -> str:
    """sacct's state without its detail ("CANCELLED by 0" -> "CANCELLED")."""
    return job["State"].split()[0] if job["State"] else ""


def run_on_cluster(cluster: Cluster, runs: list[ClusterRun], timeout: float = 1200) -> None:
    """Run the workflows at the same time, poll their interruptions until all have ended (or
    stop them after `timeout` s), then read their jobs back from sacct."""
    deadline = time.monotonic() + timeout
    try:
        for run in runs:
            run.start(cluster)
        # a list, not a generator: every run is polled (its interruptions) on every round
        while any([run.running(cluster) for run in runs]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for run in runs:
            run.stop()
    for run in runs:
        run.running(cluster)
        run.read_back(cluster)


OVERRUN_WORKFLOW = """
rule all:
    input:
        "memory.txt",
        "time.txt",


rule needs_more_memory:  # ~1 GB in its step; 600 MB on attempt 1, 1200 MB on attempt 2
    output:
        "memory.txt",
    resources:
        mem_mb=lambda wc, attempt: 600 * attempt,
    shell:
        "python -c 'import time; b = bytearray(800 * 2**20); b[::4096] = bytes(len(b[::4096])); "
        "time.sleep(5)' && echo done > {output}"


rule needs_more_time:  # cannot finish in 1 minute; attempt 2 has 2 and finishes at once
    output:
        "time.txt",
    resources:
        runtime=lambda wc, attempt: attempt,
    shell:
        "if [ {resources.runtime} -lt 2 ]; then sleep 600; fi; echo done > {output}"
"""


GRES_WORKFLOW = """
rule all:
    input:
        "gpu_env.txt",


rule attribute:  # a GPU rule named as in the profile; it records the GPU its job step sees
    output:
        "gpu_env.txt",
    resources:
        gpu=1,
        mem_mb=1000,
        runtime=10,
    shell:
        "echo ${{CUDA_VISIBLE_DEVICES:-unset}} > {output}"
"""


def workflow_dir(path: Path, snakefile: str) -> Path:
    path.mkdir(parents=True)
    (path / "Snakefile").write_text(snakefile)
    return path


@pytest.fixture(scope="module")
def cluster_runs(cluster, demo, tmp_path_factory) -> dict[str, ClusterRun]:
    """Three workflows on the cluster at once (the small ones mostly sleep or wait for the GPU,
    while the demo's first jobs run one at a time anyway): the demo through the small-node
    profile, with two attribution jobs interrupted; OVERRUN_WORKFLOW through the profile as it
    is; GRES_WORKFLOW with the profile's setting for GRES-only clusters."""
    root = tmp_path_factory.mktemp("cluster")
    runs = {
        "overrun": ClusterRun(workflow_dir(root / "overrun", OVERRUN_WORKFLOW),
                              ["--slurm-keep-successful-logs"]),
        "gres": ClusterRun(workflow_dir(root / "gres", GRES_WORKFLOW), [],
                           env={"QRNCA_SLURM_GRES": f"gpu:{GPU_TYPE}:1"}),
        "demo": ClusterRun(copy_workflow(root / "demo"), [*DEMO],
                           profile=small_node_profile(root / "profile"),
                           interruptions=(Interruption(DATASETS[0], 0, "cancel"),
                                          Interruption(DATASETS[1], 0, "kill_process"))),
    }
    run_on_cluster(cluster, list(runs.values()))
    for name, run in runs.items():  # shown with -s or when a test fails
        print(f"{name} on the cluster: {run.seconds:.0f} s, {len(run.jobs)} jobs")
        for job in run.jobs:
            print("  " + "  ".join(job[f] for f in JOB_FIELDS))
    return runs


def succeeded(run: ClusterRun, cluster: Cluster) -> ClusterRun:
    assert run.returncode == 0, run.output[-6000:] + "\n" + cluster.log_tails()
    return run


@pytest.fixture(scope="module")
def cluster_demo(cluster_runs, cluster) -> ClusterRun:
    return succeeded(cluster_runs["demo"], cluster)


@pytest.fixture(scope="module")
def overrun(cluster_runs, cluster) -> ClusterRun:
    return succeeded(cluster_runs["overrun"], cluster)


@pytest.fixture(scope="module")
def gres_run(cluster_runs, cluster) -> ClusterRun:
    return succeeded(cluster_runs["gres"], cluster)


def test_every_demo_job_ran_through_sbatch_inside_its_allocation(cluster_demo):
    run = cluster_demo
    expected = {rule: n for rule, n in job_counts(run.output).items() if rule != "all"}
    completed: dict[str, int] = {}
    for job in run.jobs:
        if job["State"] == "COMPLETED":
            rule = rule_from_comment(job["Comment"])
            completed[rule] = completed.get(rule, 0) + 1
    assert completed == expected, "every job of the DAG (but the local rule `all`) completes once"
    not_completed = sorted(state(j) for j in run.jobs if state(j) != "COMPLETED")
    assert not_completed == ["CANCELLED", "FAILED"], "only the two interrupted attempts failed"
    for job in run.jobs:
        step = next((s for s in run.steps if s["JobID"] == job["JobID"] + ".0"), None)
        assert step is not None, f"job {job['JobID']} ({job['Comment']}) has no srun step .0"
        if job["State"] == "COMPLETED":
            assert step["State"] == "COMPLETED", (job, step)
        job_gpu, step_gpu = ("gres/gpu=1" in x["AllocTRES"].split(",") for x in (job, step))
        assert step_gpu == job_gpu, f"the rule's step must hold its job's GPU: {job}, {step}"


def test_gpu_rules_get_a_gpu_and_every_job_its_configured_memory_and_time(cluster_demo):
    run = cluster_demo
    submitted = run.submissions()
    assert set(submitted) == {j["JobID"] for j in run.jobs}, "sacct and Snakemake agree on the jobs"
    gpu_rules = set()
    for job in run.jobs:
        rule, res = submitted[job["JobID"]]["rule"], submitted[job["JobID"]]["resources"]
        assert rule == rule_from_comment(job["Comment"]), job
        granted = (job["Partition"], job["Account"], job["ReqMem"], job["TimelimitRaw"])
        assert granted == (res["slurm_partition"], res["slurm_account"], f"{res['mem_mb']}M",
                           res["runtime"]), (rule, job, res)
        if res.get("gpu") == "1":
            gpu_rules.add(rule)
            assert res["slurm_partition"] == GPU_PARTITION and int(res["mem_mb"]) % GPU_MEM_MB == 0
            assert f"gres/gpu:{GPU_TYPE}=1" in job["AllocTRES"].split(","), job
            assert "gres/gpu=1" in job["AllocTRES"].split(","), job
        else:
            assert res["slurm_partition"] == CPU_PARTITION and res["mem_mb"] == "4000", (rule, res)
            assert "gres/gpu" not in job["AllocTRES"], job
    profile_gpu_rules = set(yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"])
    assert gpu_rules == profile_gpu_rules & set(job_counts(run.output)), \
        "the demo's jobs of every GPU rule in the profile, and only those, asked for a GPU"


def test_demo_results_equal_the_local_run(cluster_demo, demo):
    differ = compare_results(demo / "results", cluster_demo.workdir / "results",
                             ignore=(*TIMING_FIELDS, *CLUSTER_FIELDS))
    assert differ == [], "\n".join(differ)


def test_cancelled_and_killed_attribution_jobs_resume_and_finish(cluster_demo, demo):
    run = cluster_demo
    for interruption in run.interruptions:
        assert interruption.fired, f"{interruption.kind} never fired for {interruption.partial}"
        attempts = [j for j in run.jobs if j["Comment"] == interruption.comment]
        first, second = attempts
        assert first["JobID"] == interruption.job_id
        assert state(first) == ("CANCELLED" if interruption.kind == "cancel" else "FAILED"), first
        assert second["State"] == "COMPLETED", second
        # attempt 2 asks for the attempt-scaled memory and time of the rule / profile
        assert (first["ReqMem"], second["ReqMem"]) == (f"{GPU_MEM_MB}M", f"{2 * GPU_MEM_MB}M")
        assert int(second["TimelimitRaw"]) == 2 * int(first["TimelimitRaw"])
        log = (run.workdir / interruption.log).read_text()
        resumed = re.search(r"resuming, (\d+) of \d+ queries already finished", log)
        assert resumed and int(resumed[1]) >= interruption.lines_done >= 1, log[-2000:]
        shard = interruption.partial.removesuffix(".partial")
        assert (run.workdir / shard).read_bytes() == (demo / shard).read_bytes()


def test_job_over_its_memory_is_killed_and_resubmitted_with_double(overrun):
    first, second = overrun.jobs_of("needs_more_memory")
    assert (first["State"], first["ReqMem"]) == ("FAILED", "600M"), first
    assert (second["State"], second["ReqMem"]) == ("COMPLETED", "1200M"), second
    step = next(s for s in overrun.steps if s["JobID"] == first["JobID"] + ".0")
    assert step["State"].startswith("CANCELLED"), step
    slurm_log = next((overrun.workdir / ".snakemake" / "slurm_logs").rglob(f"{first['JobID']}.log"))
    assert "exceeded memory limit" in slurm_log.read_text()
    assert (overrun.workdir / "memory.txt").read_text() == "done\n"


def test_job_over_its_time_limit_is_resubmitted_with_double(overrun):
    first, second = overrun.jobs_of("needs_more_time")
    assert (first["State"], first["TimelimitRaw"]) == ("TIMEOUT", "1"), first
    assert (second["State"], second["TimelimitRaw"]) == ("COMPLETED", "2"), second
    assert (overrun.workdir / "time.txt").read_text() == "done\n"


def test_gres_only_setting_gets_the_gpu_to_the_rule(gres_run):
    """QRNCA_SLURM_GRES (clusters that accept only --gres): the job is granted the typed GPU and
    the rule, in its srun step, sees it."""
    [job] = gres_run.jobs
    assert (job["State"], job["Partition"]) == ("COMPLETED", GPU_PARTITION), job
    assert f"gres/gpu:{GPU_TYPE}=1" in job["AllocTRES"].split(","), job
    step = next(s for s in gres_run.steps if s["JobID"] == job["JobID"] + ".0")
    assert "gres/gpu=1" in step["AllocTRES"].split(","), step
    assert (gres_run.workdir / "gpu_env.txt").read_text().strip() == "0"
