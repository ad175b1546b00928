"""Provenance records and their lineage on a synthetic three-step chain (raw -> dataset -> table)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qrnca.workflow import lineage as lin
from qrnca.workflow import provenance as prov

REPO = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def chain(tmp_path):
    """raw csv + raw directory + config -> dataset (build_dataset) -> table + summary (table3)."""
    root = tmp_path
    write(root, "resources/raw/mmlu/bio.csv", "q1,a,b,c,d,A\n")
    write(root, "resources/raw/mmlu/chem.csv", "q2,a,b,c,d,B\n")
    write(root, "config/config.yaml", "seed: 7\n")
    write(root, "results/datasets/domain.jsonl", '{"id": "x"}\n')
    started = time.time()
    prov.write_records(
        outputs=["results/datasets/domain.jsonl"],
        inputs={"raw": "resources/raw/mmlu", "config": "config/config.yaml"},
        rule="build_dataset", params={"groups": {"biology": 1}, "sampling": {"seed": 7}},
        extra={"device": "cpu"}, started=started, wildcards={"dataset": "domain"},
        config={"seed": 7, "datasets": [{"name": "domain"}]}, root=root)
    write(root, "results/m/tables/table3.csv", "group,n\nbiology,1\n")
    write(root, "results/m/tables/table3.md", "| group | n |\n")
    prov.write_records(
        outputs={"csv": "results/m/tables/table3.csv", "md": "results/m/tables/table3.md"},
        inputs={"dataset": "results/datasets/domain.jsonl"},
        rule="table3", params={"top": 5},
        extra={"model": {"name": "m", "hf_id": "org/m", "revision": "main",
                         "resolved_revision": "a" * 40},
               "device": "cuda:0", "precision": "bfloat16", "seeds": {"shuffle": 3},
               "note": "kept"},
        started=started, wildcards={"model": "m"}, config={"seed": 7}, root=root)
    return root


def test_records_hold_checksums_params_config_and_environment(chain):
    csv_rec = json.loads((chain / "results/provenance/results/m/tables/table3.csv.json").read_text())
    md_rec = json.loads((chain / "results/provenance/results/m/tables/table3.md.json").read_text())
    assert csv_rec == md_rec, "every output of a job carries the same record"
    assert csv_rec["rule"] == "table3"
    assert csv_rec["wildcards"] == {"model": "m"}
    [inp] = csv_rec["inputs"]
    data = (chain / "results/datasets/domain.jsonl").read_bytes()
    assert inp == {"path": "results/datasets/domain.jsonl", "name": "dataset",
                   "sha256": sha(data), "size": len(data)}
    assert [o["name"] for o in csv_rec["outputs"]] == ["csv", "md"]
    assert csv_rec["outputs"][0]["sha256"] == sha((chain / "results/m/tables/table3.csv").read_bytes())
    assert csv_rec["params"] == {"top": 5}
    expected_cfg = hashlib.sha256(b'{"seed":7}').hexdigest()
    assert csv_rec["config"] == {"sha256": expected_cfg, "resolved": {"seed": 7}}
    assert csv_rec["model"]["resolved_revision"] == "a" * 40
    assert (csv_rec["device"], csv_rec["precision"]) == ("cuda:0", "bfloat16")
    assert csv_rec["seeds"] == {"shuffle": 3}
    assert csv_rec["extra"] == {"note": "kept"}
    assert set(prov.PACKAGES) | {"python"} <= set(csv_rec["packages"])
    assert csv_rec["packages"]["torch"] and csv_rec["packages"]["snakemake"]
    # tmp_path is outside any git tree: the code version is that of the qrnca package that ran
    assert csv_rec["code"]["workdir"] == {"commit": "unknown", "dirty": None}
    assert csv_rec["code"]["path"] == str(Path(prov.__file__).resolve().parents[1])
    assert csv_rec["code"]["commit"]
    assert csv_rec["wall_time_s"] >= 0 and csv_rec["finished"] >= csv_rec["started"]
    assert csv_rec["host"]["hostname"]
    ds_rec = json.loads((chain / "results/provenance/results/datasets/domain.jsonl.json").read_text())
    assert ds_rec["seeds"] == {"sampling.seed": 7}, "seeds are found in params"
    raw = next(i for i in ds_rec["inputs"] if i["name"] == "raw")
    assert raw["files"] == 2 and raw["size"] == len("q1,a,b,c,d,A\n") * 2


def test_lineage_names_every_upstream_file_and_checksum(chain):
    nodes = lin.lineage("results/m/tables/table3.csv", root=chain)
    paths = [n["path"] for n in nodes]
    assert paths == ["results/m/tables/table3.csv", "results/datasets/domain.jsonl",
                     "resources/raw/mmlu", "config/config.yaml"]
    assert [n["depth"] for n in nodes] == [0, 1, 2, 2]
    assert [n["rule"] for n in nodes] == ["table3", "build_dataset", None, None]
    assert all(n["status"] == "ok" for n in nodes)
    cfg = next(n for n in nodes if n["path"] == "config/config.yaml")
    assert cfg["sha256"] == sha(b"seed: 7\n") == cfg["current_sha256"]
    assert not lin.lineage_flagged(nodes)


def test_changed_raw_file_flags_the_lineage(chain, capsys):
    assert lin.lineage_main(["results/m/tables/table3.csv", "--root", str(chain)]) == 0
    out = capsys.readouterr().out
    assert "resources/raw/mmlu  (no record)" in out and "ok:" in out

    (chain / "resources/raw/mmlu/chem.csv").write_text("q2,a,b,c,d,C\n")
    nodes = lin.lineage("results/m/tables/table3.csv", root=chain)
    status = {n["path"]: n["status"] for n in nodes}
    assert status["resources/raw/mmlu"] == "changed"
    assert status["results/datasets/domain.jsonl"] == "ok"
    assert lin.lineage_flagged(nodes)
    assert lin.lineage_main(["results/m/tables/table3.csv", "--root", str(chain)]) == 1
    out = capsys.readouterr().out
    assert "FLAGGED" in out and "changed (now" in out
    assert lin.lineage_main(["results/m/tables/table3.csv", "--root", str(chain), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["flagged"] is True and len(doc["nodes"]) == 4


def test_missing_upstream_and_rewritten_intermediate(chain):
    (chain / "config/config.yaml").unlink()
    status = {n["path"]: n["status"] for n in lin.lineage("results/m/tables/table3.csv", root=chain)}
    assert status["config/config.yaml"] == "missing"
    write(chain, "config/config.yaml", "seed: 7\n")
    # the dataset is rebuilt with a new record, but table3 was made from the old bytes
    write(chain, "results/datasets/domain.jsonl", '{"id": "y"}\n')
    prov.write_records(["results/datasets/domain.jsonl"], ["config/config.yaml"], "build_dataset",
                       root=chain)
    nodes = lin.lineage("results/m/tables/table3.csv", root=chain)
    ds = next(n for n in nodes if n["path"] == "results/datasets/domain.jsonl")
    assert ds["status"] == "changed" and ds["sha256"] != ds["current_sha256"]
    # the dataset's own lineage is clean again
    assert not lin.lineage_flagged(lin.lineage("results/datasets/domain.jsonl", root=chain))


def test_output_edited_after_its_record_is_changed(chain):
    (chain / "results/m/tables/table3.csv").write_text("tampered\n")
    top = lin.lineage("results/m/tables/table3.csv", root=chain)[0]
    assert top["status"] == "changed"


def test_no_record_and_missing_output_are_errors(chain, capsys):
    with pytest.raises(prov.ProvenanceError, match="config/config.yaml: no provenance record"):
        lin.lineage("config/config.yaml", root=chain)
    assert lin.lineage_main(["config/config.yaml", "--root", str(chain)]) == 2
    assert "no provenance record" in capsys.readouterr().err
    with pytest.raises(prov.ProvenanceError, match="results/never.csv"):
        prov.write_records(["results/never.csv"], [], "table9", root=chain)
    assert not (chain / "results/provenance/results/never.csv.json").exists()


def test_directory_checksum_ignores_snakemake_marker_and_sees_renames(tmp_path):
    d = tmp_path / "d"
    write(tmp_path, "d/a.txt", "A")
    write(tmp_path, "d/sub/b.txt", "B")
    first = prov.checksum(d)
    assert first["files"] == 2 and first["size"] == 2
    (d / ".snakemake_timestamp").write_text("")
    assert prov.checksum(d) == first
    (d / "sub/b.txt").rename(d / "sub/c.txt")
    assert prov.checksum(d)["sha256"] != first["sha256"]
    assert prov.checksum(tmp_path / "nope") == {"sha256": None, "size": None}


def test_hash_cache_reuses_and_invalidates(tmp_path):
    f = write(tmp_path, "big.bin", "one")
    cache = prov.HashCache(tmp_path / "cache")
    assert cache.sha256(f) == sha(b"one")
    entry = next((tmp_path / "cache").rglob("*.json"))
    data = json.loads(entry.read_text())
    data["sha256"] = "f" * 64  # a cached value is trusted while size and mtime match
    entry.write_text(json.dumps(data))
    assert cache.sha256(f) == "f" * 64
    f.write_text("two")
    os.utime(f, ns=(time.time_ns() + 10**9,) * 2)
    assert cache.sha256(f) == sha(b"two")


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


def test_git_info_in_and_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    assert prov.git_info(repo) == {"commit": "unknown", "dirty": None}
    _git(repo, "init", "-q")
    write(repo, "a.py", "x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "init")
    info = prov.git_info(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert info == {"commit": head, "dirty": False}
    write(repo, "a.py", "x = 2\n")
    assert prov.git_info(repo) == {"commit": head, "dirty": True}
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all
    assert prov.git_info(repo) == {"commit": "unknown", "dirty": None}


def test_record_job_reads_a_snakemake_object(tmp_path, monkeypatch):
    from snakemake.iocontainers import Namedlist

    monkeypatch.chdir(tmp_path)
    write(tmp_path, "in/model.json", "{}")
    write(tmp_path, "in/n1.jsonl", "1")
    write(tmp_path, "in/n2.jsonl", "2")
    write(tmp_path, "out/acc.csv", "group,accuracy\nALL,1.0\n")
    inputs = Namedlist(["in/model.json", "in/n1.jsonl", "in/n2.jsonl"])
    inputs._set_name("model", 0)
    inputs._set_name("neurons", 1, 3)
    smk = SimpleNamespace(
        rule="score_accuracy", input=inputs, output=Namedlist(["out/acc.csv"]),
        params=Namedlist(fromdict={"spec": {"name": "tiny", "seed": 1}, "batch": 4}),
        wildcards=Namedlist(fromdict={"model": "tiny", "dataset": "d"}),
        config={"results": "results"}, log=Namedlist(["logs/x.log"]), threads=2,
        resources=Namedlist(fromdict={"_cores": 2, "mem_mb": 1000, "gpu": 1}))
    [path] = prov.record_job(smk, extra={"device": "cpu"}, started=time.time() - 1.5)
    assert path == tmp_path / "results/provenance/out/acc.csv.json"
    rec = json.loads(path.read_text())
    assert [(i["name"], i["path"]) for i in rec["inputs"]] == [
        ("model", "in/model.json"), ("neurons", "in/n1.jsonl"), ("neurons", "in/n2.jsonl")]
    assert rec["params"] == {"spec": {"name": "tiny", "seed": 1}, "batch": 4}
    assert rec["wildcards"] == {"model": "tiny", "dataset": "d"}
    assert rec["resources"] == {"mem_mb": 1000, "gpu": 1} and rec["threads"] == 2
    assert rec["seeds"] == {"spec.seed": 1} and rec["log"] == ["logs/x.log"]
    assert rec["wall_time_s"] >= 1.5
    assert [n["path"] for n in lin.lineage("out/acc.csv")] == [
        "out/acc.csv", "in/model.json", "in/n1.jsonl", "in/n2.jsonl"]


def test_model_provenance(tmp_path):
    from qrnca.models.loading import load_model
    from qrnca.models.tiny import save_tiny

    save_tiny(tmp_path / "tiny", layers=1, hidden=8)
    model, _ = load_model({"name": "tiny", "path": str(tmp_path / "tiny")})
    info = prov.model_provenance(model, {"name": "tiny", "path": str(tmp_path / "tiny")})
    assert info["path"] == str((tmp_path / "tiny").resolve())  # outside the workdir: absolute
    assert info["name"] == "tiny" and info["dtype"] == "float32" and info["resolved_revision"] is None
    hub = SimpleNamespace(config=SimpleNamespace(_commit_hash="c" * 40))
    assert prov.model_provenance(hub, {"hf_id": "org/m", "revision": "main"})["resolved_revision"] == "c" * 40
    pinned = SimpleNamespace(config=SimpleNamespace())
    rev = "0123456789abcdef0123456789abcdef01234567"
    assert prov.model_provenance(pinned, {"hf_id": "org/not-cached", "revision": rev})["resolved_revision"] == rev


def test_paths_inside_the_workdir_are_recorded_relative(tmp_path, monkeypatch):
    """Two clones at different places write the same records (only timing fields differ)."""
    from qrnca.models.loading import load_model
    from qrnca.models.tiny import save_tiny

    monkeypatch.chdir(tmp_path)
    save_tiny(tmp_path / "tiny", layers=1, hidden=8)
    model, _ = load_model({"name": "tiny", "path": "tiny"})
    assert prov.model_provenance(model, {"name": "tiny", "path": "tiny"})["path"] == "tiny"


def test_model_identity_names_the_weights_without_loading_them(tmp_path, monkeypatch):
    from qrnca.models.tiny import save_tiny

    monkeypatch.chdir(tmp_path)
    save_tiny(tmp_path / "tiny", layers=1, hidden=8)
    first = prov.model_identity({"name": "tiny", "path": "tiny"})
    assert first["path"] == "tiny" and len(first["sha256"]) == 64
    assert (tmp_path / ".snakemake/qrnca-sha256-cache").is_dir()  # not under results/
    config = tmp_path / "tiny/config.json"
    config.write_text(config.read_text() + " ")
    assert prov.model_identity({"name": "tiny", "path": "tiny"})["sha256"] != first["sha256"]
    hub = prov.model_identity({"name": "h", "hf_id": "org/not-cached", "revision": "r1"})
    assert hub == {"name": "h", "hf_id": "org/not-cached", "revision": "r1",
                   "resolved_revision": "r1"}


def test_timing_is_kept_apart_and_library_files_are_summed_up(chain):
    root = chain
    write(root, "qrnca/a.py", "x = 1\n")
    write(root, "results/m/fig.pdf", "%PDF")
    prov.write_records(["results/m/fig.pdf"],
                       {"table": "results/m/tables/table3.csv", "code": ["qrnca/a.py"],
                        "raw_files": ["resources/raw/mmlu/bio.csv"]},
                       "fig", extra={"timing": {"seconds": 1.5}}, started=time.time(), root=root)
    record = json.loads((root / "results/provenance/results/m/fig.pdf.json").read_text())
    assert record["timing"] == {"seconds": 1.5} and "timing" not in record["extra"]
    assert set(prov.TIMING_FIELDS) <= set(record)
    assert [i.get("name") for i in record["inputs"]] == ["table", "code"]  # listing left out
    text = lin.format_lineage(lin.lineage("results/m/fig.pdf", root))
    assert "  code: 1 library file(s)  ok" in text and "qrnca/a.py" not in text
    write(root, "qrnca/a.py", "x = 2\n")
    assert "qrnca/a.py  (no record)" in lin.format_lineage(lin.lineage("results/m/fig.pdf", root))


def test_command_line_entry_points(chain):
    for cmd in ([sys.executable, "-m", "qrnca.workflow.lineage"],
                [str(Path(sys.executable).parent / "qrnca-lineage")]):
        if not Path(cmd[0]).exists():
            pytest.fail(f"{cmd[0]} missing: run `.venv/bin/pip install -e . --no-deps`")
        res = subprocess.run([*cmd, "results/m/tables/table3.csv"], cwd=chain,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "results/datasets/domain.jsonl  [build_dataset]" in res.stdout
    (chain / "resources/raw/mmlu/bio.csv").unlink()
    res = subprocess.run([sys.executable, "-m", "qrnca.workflow.lineage", "results/m/tables/table3.csv"],
                         cwd=chain, capture_output=True, text=True)
    assert res.returncode == 1 and "changed" in res.stdout
