"""A fake SLURM for tests: just enough of sbatch/sacct/squeue/srun/scancel/sinfo/sacctmgr/sshare
for snakemake-executor-plugin-slurm 2.8.0 to run a workflow end to end on one machine.

Why: the profile's real contract is the exact `sbatch` command line the plugin builds from rule
resources and profile values. With these stubs first on PATH, a test runs the real plugin, every
job really executes (in the background, like a cluster would), and the recorded argv can be
asserted on. Nothing here talks to a real cluster.

State lives in $STUB_SLURM_DIR (required; the names do not start with SLURM_ because the jobstep
plugin strips SLURM_* variables before it calls srun):
  next_id               the job-id counter (locked with fcntl, so parallel submissions are safe)
  jobs/<id>.json        {"id", "name", "state", "exit_code", "pid"} per submitted job
Every stub call is appended as one JSON line {"cmd": ..., "argv": [...], "cwd": ...} to
$STUB_SLURM_LOG (default $STUB_SLURM_DIR/calls.jsonl).

Output formats follow what the plugin parses (see its job_status_query.py / __init__.py):
  sbatch --parsable  -> "<id>"
  sacct -X --parsable2 --noheader --format=JobIdRaw,State ... --name <run_uuid> -> "<id>|<STATE>"
  squeue --format='%i|%T' --noheader --name <run_uuid> -> "<id>|<STATE>"
  sinfo -o %P        -> "stub*" (a default partition)
  sacctmgr ... format=account%256 -> $STUB_SLURM_ACCOUNTS (comma separated; empty -> no validation)
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _state_dir() -> Path:
    d = os.environ.get("STUB_SLURM_DIR")
    if not d:
        sys.stderr.write("slurm stub: STUB_SLURM_DIR is not set (the test helper sets it)\n")
        sys.exit(2)
    p = Path(d)
    (p / "jobs").mkdir(parents=True, exist_ok=True)
    return p


def _log_call(cmd: str, argv: list[str]) -> None:
    state = _state_dir()
    log = Path(os.environ.get("STUB_SLURM_LOG") or state / "calls.jsonl")
    line = json.dumps({"cmd": cmd, "argv": argv, "cwd": os.getcwd(), "time": time.time()})
    with open(log, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(line + "\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)


def _next_id(state: Path) -> int:
    counter = state / "next_id"
    with open(counter, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read().strip()
        job_id = int(text) if text else 1001
        fh.seek(0)
        fh.truncate()
        fh.write(str(job_id + 1))
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)
    return job_id


def _job_file(state: Path, job_id: int | str) -> Path:
    return state / "jobs" / f"{job_id}.json"


def _write_job(state: Path, job: dict) -> None:
    path = _job_file(state, job["id"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job), encoding="utf-8")
    os.replace(tmp, path)


def _read_jobs(state: Path) -> list[dict]:
    jobs = []
    for p in sorted((state / "jobs").glob("*.json")):
        try:
            jobs.append(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, OSError):
            continue  # being replaced right now; the next poll sees it
    return jobs


def _parse_sbatch(argv: list[str]) -> dict:
    """Pick out what the stub needs; every flag is recorded verbatim in the call log anyway."""
    opts = {"wrap": None, "name": None, "output": None, "workdir": None, "script": None}
    takes_value = {"--job-name": "name", "-J": "name", "--output": "output", "-o": "output",
                   "-D": "workdir", "--chdir": "workdir"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--wrap="):
            opts["wrap"] = a[len("--wrap="):]
        elif a == "--wrap":
            i += 1
            opts["wrap"] = argv[i]
        elif a in takes_value:
            i += 1
            opts[takes_value[a]] = argv[i]
        elif "=" in a and a.split("=", 1)[0] in takes_value:
            key, val = a.split("=", 1)
            opts[takes_value[key]] = val
        elif a.startswith("--array"):
            sys.stderr.write("sbatch stub: --array is not supported by the test stub\n")
            sys.exit(1)
        elif not a.startswith("-") and opts["script"] is None:
            # a batch script path (the plugin's pass_command_as_script mode uses /dev/stdin)
            opts["script"] = a
        i += 1
    return opts


def sbatch(argv: list[str]) -> int:
    state = _state_dir()
    opts = _parse_sbatch(argv)
    if opts["wrap"] is not None:
        command = opts["wrap"]
    elif opts["script"] is not None:
        command = sys.stdin.read() if opts["script"] == "/dev/stdin" else Path(opts["script"]).read_text()
    else:
        sys.stderr.write("sbatch stub: neither --wrap nor a script was given\n")
        return 1
    job_id = _next_id(state)
    workdir = opts["workdir"] or os.getcwd()
    output = (opts["output"] or str(Path(workdir) / "slurm-%j.out")).replace("%j", str(job_id))
    spec = {"id": job_id, "name": opts["name"] or "", "state": "PENDING", "exit_code": None,
            "pid": None, "command": command, "workdir": workdir, "output": output}
    _write_job(state, spec)
    # Run the job detached, through this same file in "runner" mode, so sbatch returns at once.
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_run", str(job_id)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=os.environ.copy(),
    )
    spec["pid"] = proc.pid
    spec["state"] = "RUNNING"
    _write_job(state, spec)
    if "--parsable" in argv:
        print(job_id)
    else:
        print(f"Submitted batch job {job_id}")
    return 0


def _run(job_id: str) -> int:
    state = _state_dir()
    spec = json.loads(_job_file(state, job_id).read_text(encoding="utf-8"))
    env = os.environ.copy()
    env.update({"SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id),
                "SLURM_JOB_NAME": spec["name"], "SLURM_SUBMIT_DIR": spec["workdir"],
                "SLURM_CLUSTER_NAME": "stub"})
    Path(spec["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(spec["output"], "ab") as out:
        rc = subprocess.call(["bash", "-c", spec["command"]], cwd=spec["workdir"], env=env,
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    spec = json.loads(_job_file(state, job_id).read_text(encoding="utf-8"))
    if spec["state"] != "CANCELLED":
        spec["state"] = "COMPLETED" if rc == 0 else "FAILED"
    spec["exit_code"] = rc
    _write_job(state, spec)
    return 0


def _status_lines(argv: list[str]) -> list[str]:
    state = _state_dir()
    name = None
    ids = None
    for i, a in enumerate(argv):
        if a == "--name" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--name="):
            name = a.split("=", 1)[1]
        elif a == "-j" and i + 1 < len(argv):
            ids = argv[i + 1]
    if ids is not None:
        return []  # per-step reason / node queries: nothing to report
    return [f"{j['id']}|{j['state']}" for j in _read_jobs(state) if name is None or j["name"] == name]


def sacct(argv: list[str]) -> int:
    if any(a.startswith("-o") or a == "-nu" for a in argv) and "--name" not in argv:
        return 0  # account guess (`sacct -nu USER -o Account%256`): no history
    print("\n".join(_status_lines(argv)))
    return 0


def squeue(argv: list[str]) -> int:
    print("\n".join(_status_lines(argv)))
    return 0


def scancel(argv: list[str]) -> int:
    state = _state_dir()
    wanted = {a for a in argv if not a.startswith("-")}
    for job in _read_jobs(state):
        if str(job["id"]) in wanted:
            job["state"] = "CANCELLED"
            _write_job(state, job)
            if job.get("pid"):
                try:
                    os.killpg(job["pid"], signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
    return 0


def srun(argv: list[str]) -> int:
    """Drop srun's own options and exec the job step command in place (one task, this node)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    if i >= len(argv):
        sys.stderr.write("srun stub: no command given\n")
        return 1
    os.execvp(argv[i], argv[i:])
    return 1  # not reached


def sinfo(argv: list[str]) -> int:
    print("PARTITION\nstub*")
    return 0


def sacctmgr(argv: list[str]) -> int:
    accounts = [a.strip() for a in os.environ.get("STUB_SLURM_ACCOUNTS", "").split(",") if a.strip()]
    print("\n".join(accounts))
    return 0


def sshare(argv: list[str]) -> int:
    return 0


COMMANDS = {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "scancel": scancel,
            "srun": srun, "sinfo": sinfo, "sacctmgr": sacctmgr, "sshare": sshare}


def main(cmd: str) -> None:
    argv = sys.argv[1:]
    _log_call(cmd, argv)
    sys.exit(COMMANDS[cmd](argv))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_run":
        sys.exit(_run(sys.argv[2]))
    sys.stderr.write("usage: _slurm_stub.py _run JOBID (internal)\n")
    sys.exit(2)
