"""Run a workflow through the real SLURM executor plugin against the stub SLURM in tests/stubs.

Why: the only place where a profile's meaning is visible is the `sbatch` command line the plugin
builds. `run_with_slurm_stubs` runs `snakemake --profile <profile>` in a directory with the stub
`sbatch`/`sacct`/`srun`/... first on PATH; every job really runs (the stub `sbatch` executes the
`--wrap` command in the background and the stub `srun` just execs its command), and every stub
call is recorded, so tests can assert on exact flags per rule.

Used by tests/test_slurm_profile.py and by the workflow test that runs the demo through SLURM;
`profile_env`, `rule_from_comment` and `flag_value` also by the real-cluster tests
(tests/test_slurm_real.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUBS = Path(__file__).resolve().parent / "stubs"
PROFILE = REPO / "slurm"

# Site values the profile reads; tests get harmless ones unless they pass their own.
DEFAULT_SITE_ENV = {
    "QRNCA_SLURM_ACCOUNT": "testacct",
    "QRNCA_SLURM_PARTITION": "cpuq",
}


@dataclass
class StubRun:
    """What one stubbed Snakemake run did: the process result and every stub call, in order."""

    result: subprocess.CompletedProcess
    calls: list[dict] = field(default_factory=list)
    state_dir: Path | None = None

    @property
    def sbatch(self) -> list[list[str]]:
        """argv of every sbatch call, in submission order."""
        return [c["argv"] for c in self.calls if c["cmd"] == "sbatch"]

    def sbatch_for(self, rule: str) -> list[list[str]]:
        """argv of the sbatch calls that submitted jobs of `rule` (one per attempt / wildcard set)."""
        return [argv for argv in self.sbatch if rule_of(argv) == rule]

    def jobs(self) -> list[dict]:
        """Final state of every stub job ({"id", "name", "state", "exit_code", ...})."""
        if self.state_dir is None:
            return []
        return [json.loads(p.read_text()) for p in sorted((self.state_dir / "jobs").glob("*.json"))]

    def output(self) -> str:
        return (self.result.stdout or "") + (self.result.stderr or "")


def rule_of(sbatch_argv: list[str]) -> str | None:
    """The rule name from the plugin's `--comment rule_<name>[_wildcards_<...>]`."""
    for i, a in enumerate(sbatch_argv):
        value = None
        if a == "--comment" and i + 1 < len(sbatch_argv):
            value = sbatch_argv[i + 1]
        elif a.startswith("--comment="):
            value = a.split("=", 1)[1]
        if value is not None and value.startswith("rule_"):
            return rule_from_comment(value)
    return None


def rule_from_comment(comment: str) -> str | None:
    """The rule name from a job comment the plugin wrote (`rule_<name>[_wildcards_<...>]`)."""
    if not comment.startswith("rule_"):
        return None
    return comment[len("rule_"):].split("_wildcards_", 1)[0]


def flag_value(argv: list[str], *names: str) -> str | None:
    """Value of the first of `names` in argv, as `-t 60`, `--mem 4000` or `--gpus=v100:1`."""
    for i, a in enumerate(argv):
        for name in names:
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
    return None


def profile_env(env: dict | None = None, path: list[str | os.PathLike] = ()) -> dict:
    """This process's environment for a run of the profile: no SLURM_*/SBATCH_*/SRUN_* settings
    and no site values from the caller's shell, `path` then this venv's bin first on PATH (the
    jobs run with the same venv), DEFAULT_SITE_ENV, then `env` (a value of None removes)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    for k in ("QRNCA_SLURM_ACCOUNT", "QRNCA_SLURM_PARTITION", "QRNCA_SLURM_GPU_PARTITION",
              "QRNCA_GPU_MODEL", "QRNCA_SLURM_GRES"):
        base.pop(k, None)  # the caller's shell must not leak site values into a test
    base.update(DEFAULT_SITE_ENV)
    base["PATH"] = os.pathsep.join([*map(str, path), str(Path(sys.executable).parent),
                                    base.get("PATH", "")])
    for k, v in (env or {}).items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def stub_env(state_dir: Path, env: dict | None = None) -> dict:
    """The environment for a stubbed run: profile_env with the stubs first on PATH."""
    stub = {"STUB_SLURM_ACCOUNTS": DEFAULT_SITE_ENV["QRNCA_SLURM_ACCOUNT"],
            "STUB_SLURM_DIR": str(state_dir), "STUB_SLURM_LOG": str(state_dir / "calls.jsonl")}
    return profile_env({**stub, **(env or {})}, path=[STUBS])


def _kill_leftover_jobs(state_dir: Path) -> None:
    for p in (state_dir / "jobs").glob("*.json"):
        try:
            job = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if job.get("state") in ("RUNNING", "PENDING") and job.get("pid"):
            try:
                os.killpg(job["pid"], signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def run_with_slurm_stubs(
    workdir: str | os.PathLike,
    args: list[str] | tuple[str, ...] = (),
    env: dict | None = None,
    *,
    profile: str | os.PathLike = PROFILE,
    fast_status: bool = True,
    timeout: float = 600,
    state_dir: str | os.PathLike | None = None,
) -> StubRun:
    """Run `python -m snakemake --profile <profile> <args>` in `workdir` against the stub SLURM.

    env: extra / overriding environment (a value of None removes the variable, e.g.
    {"QRNCA_SLURM_ACCOUNT": None} to test the unset case). fast_status polls job status after 1 s
    instead of the plugin's 40 s. Stub state and the call log go to `state_dir` (default
    <workdir>/.slurm_stub/; pass one outside a git checkout to keep the tree clean).
    Jobs still running when Snakemake exits or times out are killed.
    """
    workdir = Path(workdir)
    state_dir = Path(state_dir) if state_dir is not None else workdir / ".slurm_stub"
    (state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(profile)]
    if fast_status:
        cmd += ["--slurm-init-seconds-before-status-checks", "1"]
    cmd += list(args)
    try:
        result = subprocess.run(cmd, cwd=workdir, env=stub_env(state_dir, env), text=True,
                                capture_output=True, timeout=timeout)
    finally:
        _kill_leftover_jobs(state_dir)
    log = state_dir / "calls.jsonl"
    calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    return StubRun(result=result, calls=calls, state_dir=state_dir)
