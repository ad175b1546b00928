"""Shared test settings and the session's one local run of the demo."""

from pathlib import Path

import pytest
import torch

from demo_workflow import DEMO, copy_workflow, snakemake


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models: one thread avoids OpenMP spin-waiting on a shared 2-core machine (two threads
    made the attribution tests 12x slower there). Workflow tests run Snakemake in subprocesses
    and are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The whole demo run once locally (`--cores 2`), shared by tests/test_workflow.py and by
    tests/test_slurm_real.py (the reference its cluster run must equal). Do not modify it: copy."""
    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    run = snakemake(work, *DEMO, "--cores", "2")
    assert run.returncode == 0, run.stderr[-6000:]
    return work
