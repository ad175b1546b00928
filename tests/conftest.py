"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models: one thread avoids OpenMP spin-waiting on a shared 2-core machine (two threads
    made the attribution tests 12x slower there). Workflow tests run Snakemake in subprocesses
    and are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
