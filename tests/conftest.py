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


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A folder on a nearly full disk: a 64 KiB tmpfs when this machine lets the test mount one
    (root), else a folder where writing more than 64 KiB in all fails with ENOSPC (simulated by
    wrapping the writes of files opened there; QRNCA_TEST_SIMULATE_ENOSPC=1 forces this).
    Yields (folder, mounted)."""
    import errno
    import os
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = not os.environ.get("QRNCA_TEST_SIMULATE_ENOSPC") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    ).returncode == 0
    if mounted:
        try:
            yield disk, True
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        return
    import builtins

    budget = {"left": 64 * 1024}
    real_open = builtins.open

    def limited_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if any(m in mode for m in "wa") and str(disk) in os.fspath(file):
            write = handle.write

            def checked(data):
                budget["left"] -= len(data)
                if budget["left"] < 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return write(data)

            handle.write = checked
        return handle

    monkeypatch.setattr(builtins, "open", limited_open)
    yield disk, False


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """One run of the whole demo (a copy of the workflow and the package), shared by every test
    that only reads it."""
    from demo_workflow import DEMO, copy_workflow, snakemake

    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    run = snakemake(work, *DEMO, "--cores", "2")
    assert run.returncode == 0, run.stderr[-6000:]
    return work


@pytest.fixture
def demo_copy(demo, tmp_path):
    """A copy of the finished demo (mtimes and Snakemake metadata kept) for tests that change it."""
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(demo, dest, symlinks=True)
    return dest
