"""Pinned raw sources: checksum tables, verified extraction from tar/zip, local verification."""

import hashlib
import io
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest

from qrnca.datasets import fetch
from qrnca.errors import DatasetError, InputError

from demo_workflow import SHARED
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")

FILES = {"test/a_test.csv": b"q,1,2,3,4,A\n", "val/a_val.csv": b"q,1,2,3,4,B"}
SUMS = {rel: hashlib.sha256(data).hexdigest() for rel, data in FILES.items()}


def make_tar(path, files, top="data/"):
    with tarfile.open(path, "w") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(top + rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(top + "README.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    return path


def make_zip(path, files, top="mlama1.1/"):
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(top + rel, data)
        zf.writestr(top + "other/unused.jsonl", b"{}\n")
    return path


def test_pinned_tables_cover_the_paper_inputs():
    assert len(fetch.MMLU_SHA256) == 18 and len(fetch.MLAMA_SHA256) == 36 and len(fetch.RELEASED_SHA256) == 2
    assert all(len(d) == 64 for table in fetch.SHA256.values() for d in table.values())
    assert fetch.URLS["released"]["subject_qa.json"].endswith(
        "dd8142d123feb1b2a45a78db18bfb7a6089ce616/data/subject_qa.json"
    )
    with pytest.raises(InputError, match="unknown raw source kind"):
        fetch.known_files("wiki")
    with pytest.raises(InputError, match="no pinned checksum"):
        fetch.known_files("mmlu", ["test/x.csv"])


@pytest.mark.parametrize("maker", [make_tar, make_zip])
def test_extract_only_wanted_files_verified(tmp_path, maker):
    archive = maker(tmp_path / ("a.tar" if maker is make_tar else "a.zip"), FILES)
    dest = tmp_path / "raw" / "mmlu"
    assert fetch.extract_archive(archive, dest, SUMS) == dest
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == set(FILES)
    assert (dest / "val" / "a_val.csv").read_bytes() == FILES["val/a_val.csv"]
    assert [p.name for p in dest.parent.iterdir()] == ["mmlu"]  # no staging folder left


@pytest.mark.parametrize("maker", [make_tar, make_zip])
def test_checksum_mismatch_leaves_nothing(tmp_path, maker):
    archive = maker(tmp_path / ("a.tar" if maker is make_tar else "a.zip"), FILES)
    dest = tmp_path / "raw" / "mmlu"
    wrong = dict(SUMS, **{"val/a_val.csv": "0" * 64})
    with pytest.raises(fetch.ChecksumError) as err:
        fetch.extract_archive(archive, dest, wrong)
    message = str(err.value)
    assert "val/a_val.csv" in message and "0" * 64 in message and SUMS["val/a_val.csv"] in message
    assert isinstance(err.value, InputError)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_missing_member_and_bad_archive(tmp_path):
    archive = make_tar(tmp_path / "a.tar", FILES)
    with pytest.raises(DatasetError, match="no member for test/b_test.csv"):
        fetch.extract_archive(archive, tmp_path / "out", {"test/b_test.csv": "0" * 64})
    assert not (tmp_path / "out").exists()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an archive")
    with pytest.raises(DatasetError, match="not a tar or zip"):
        fetch.extract_archive(junk, tmp_path / "out", SUMS)


def test_destination_must_be_empty(tmp_path):
    archive = make_zip(tmp_path / "a.zip", FILES)
    dest = tmp_path / "dest"
    (dest / "keep").mkdir(parents=True)
    with pytest.raises(InputError, match="already exists"):
        fetch.extract_archive(archive, dest, SUMS)
    assert (dest / "keep").is_dir()
    (dest / "keep").rmdir()
    fetch.extract_archive(archive, dest, SUMS)  # an empty folder is fine
    assert (dest / "test" / "a_test.csv").is_file()


def test_verify_local_warns_and_lists_mismatches(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(fetch.SHA256, "mmlu", dict(SUMS, **{"dev/missing.csv": "1" * 64}))
    for rel, data in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert fetch.verify_local(tmp_path, "mmlu") == []
    (tmp_path / "val" / "a_val.csv").write_bytes(b"newer copy")
    with caplog.at_level(logging.WARNING):
        mismatches = fetch.verify_local(tmp_path, "mmlu")
    assert [Path(m.file).name for m in mismatches] == ["a_val.csv"]
    assert mismatches[0].expected == SUMS["val/a_val.csv"]
    assert "a_val.csv" in caplog.text
    assert fetch.resolve_source("mmlu", local=tmp_path) == tmp_path
    with pytest.raises(DatasetError, match="not found"):
        fetch.resolve_source("mmlu", local=tmp_path / "nope")


@needs_shared
def test_shared_copies_match_the_pinned_digests():
    assert fetch.verify_local(SHARED / "mmlu", "mmlu") == []
    assert fetch.verify_local(SHARED / "mlama", "mlama") == []
    assert fetch.verify_local(SHARED / "released", "released") == []
    present = sum((SHARED / kind / rel).is_file() for kind in fetch.KINDS for rel in fetch.SHA256[kind])
    assert present == 56


@needs_shared
def test_extract_real_mmlu_layout_from_a_data_tar(tmp_path):
    files = {rel: (SHARED / "mmlu" / rel).read_bytes() for rel in fetch.MMLU_SHA256}
    archive = make_tar(tmp_path / "data.tar", files)
    dest = fetch.extract_archive(archive, tmp_path / "mmlu", fetch.known_files("mmlu"))
    assert fetch.verify_local(dest, "mmlu") == []


def test_download_through_a_url(tmp_path, monkeypatch):
    """The download path end to end, with file:// URLs standing in for the network."""
    archive = make_zip(tmp_path / "mlama1.1.zip", FILES)
    monkeypatch.setitem(fetch.URLS, "mlama", archive.as_uri())
    monkeypatch.setitem(fetch.SHA256, "mlama", SUMS)
    dest = fetch.download("mlama", tmp_path / "raw" / "mlama")
    assert fetch.verify_local(dest, "mlama") == [] and (dest / "test" / "a_test.csv").is_file()
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["mlama"]  # archive temp dir removed

    released = {"subject_qa.json": b"{}", "language_qa.json": b"{}"}
    for name, data in released.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.setitem(fetch.URLS, "released", {n: (tmp_path / n).as_uri() for n in released})
    monkeypatch.setitem(
        fetch.SHA256, "released", {n: hashlib.sha256(d).hexdigest() for n, d in released.items()}
    )
    monkeypatch.setitem(fetch.SHA256["released"], "language_qa.json", "f" * 64)
    with pytest.raises(fetch.ChecksumError, match="language_qa.json: expected f{64}"):
        fetch.download("released", tmp_path / "raw" / "released")
    assert not (tmp_path / "raw" / "released").exists()
    with pytest.raises(DatasetError, match="download failed"):
        monkeypatch.setitem(fetch.URLS, "mmlu", (tmp_path / "absent.tar").as_uri())
        fetch.download("mmlu", tmp_path / "raw" / "mmlu")


def test_single_released_file(tmp_path, monkeypatch):
    data = b'{"k": 1}'
    (tmp_path / "language_qa.json").write_bytes(data)
    monkeypatch.setitem(
        fetch.URLS, "released", {"language_qa.json": (tmp_path / "language_qa.json").as_uri()}
    )
    monkeypatch.setitem(fetch.SHA256, "released", {"language_qa.json": hashlib.sha256(data).hexdigest()})
    dest = tmp_path / "raw" / "released" / "language_qa.json"
    assert fetch.download_released_file("language_qa.json", dest).read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["language_qa.json"]
    assert fetch.verify_local(dest, "released") == []
    dest.write_bytes(b"{}")
    assert [Path(m.file).name for m in fetch.verify_local(dest, "released")] == ["language_qa.json"]
    monkeypatch.setitem(fetch.SHA256["released"], "language_qa.json", "a" * 64)
    with pytest.raises(fetch.ChecksumError):
        fetch.download_released_file("language_qa.json", tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()
    with pytest.raises(InputError, match="no pinned checksum"):
        fetch.download_released_file("domain_sample_multi_choice_qa.json", tmp_path / "x.json")
