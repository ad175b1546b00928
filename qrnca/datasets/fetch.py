"""Raw inputs: pinned public sources, sha256-verified extraction, and checks of local copies.

Each raw source is either a local path from the config (checked with `verify_local`, which only
warns: users may point at a newer or re-encoded copy on purpose) or downloaded from its public
source with `download`, which extracts only the files the datasets need and verifies every one
against the digests below (a mismatch is an error, and nothing is left at the destination).

The digests are those of the individual raw files (not of the archives, which could not be
fetched when this was written): the MMLU CSVs as in hendrycks' `data.tar`, the mLAMA 1.1 files as
in `mlama1.1.zip`, and the released JSON files at commit dd8142d (provenance: shared/data/README.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ..errors import DatasetError, InputError
from ..io import share_permissions

log = logging.getLogger(__name__)

KINDS = ("mmlu", "mlama", "released")

_RELEASED_COMMIT = "dd8142d123feb1b2a45a78db18bfb7a6089ce616"
URLS: dict[str, str | dict[str, str]] = {
    "mmlu": "https://people.eecs.berkeley.edu/~hendrycks/data.tar",
    "mlama": "http://cistern.cis.lmu.de/mlama/mlama1.1.zip",
    "released": {
        name: f"https://raw.githubusercontent.com/tigerchen52/qrneuron/{_RELEASED_COMMIT}/data/{name}"
        for name in ("subject_qa.json", "language_qa.json")
    },
}

#: MMLU CSVs under the tar's `data/` folder: six high-school subjects x test/val/dev.
MMLU_SHA256: dict[str, str] = {
    "test/high_school_biology_test.csv": "cfaba2b58b9714d2a6983a90bce17f14cc44cfc8195b20f8f65fef70d21331b9",
    "test/high_school_physics_test.csv": "573e0f8d8309e4669f53a4b13248a908507b6d5d4c97c977f7bb9814658fee54",
    "test/high_school_chemistry_test.csv": "0e3d94da331d1eb3cafecd64a6f0f64e6fd2410b0a76676b2c0728dc5c1374f5",
    "test/high_school_mathematics_test.csv": "fe8f7a154834bba30947401ba37ea6c7afdcfba82ddc341c79b5d3016991d290",
    "test/high_school_computer_science_test.csv": "63806168fb0e5a72fe5bfb880f19816d8997e28d3f312c6b1831f4d40f432059",
    "test/high_school_geography_test.csv": "c6acdaa9d94c88cdefb9dd569e376733d9ba670c07db12cdff36ccdc18c2ab0c",
    "val/high_school_biology_val.csv": "c0b264a94514f7326499c11e2b69f3991655391208d7c58c40b55e97404d4549",
    "val/high_school_physics_val.csv": "3861ace8d359bac8b8560481599212193d38120fc350082680d99ad2090eeb0e",
    "val/high_school_chemistry_val.csv": "ed0c2c9846a709332f679a14dc0f99b68d61b6161e7f86aaf9012a11f9617e3b",
    "val/high_school_mathematics_val.csv": "233f0811fb852a080f52c9e9cb3ce7cfb76f54661dd6f8fddfdac6b8e2a989b2",
    "val/high_school_computer_science_val.csv": "5e40b8773655e59293ecf6a3e60346f3dc23273a808e64a9cd415b8dd2d55381",
    "val/high_school_geography_val.csv": "94444fda55747826967db7d9eb4a977edc34a64c0cdf2a8e865c382a8610d96b",
    "dev/high_school_biology_dev.csv": "6a200085c150794846d4bab43bb0e22ceec9f99576dfc25f5c5d8faa9595ae13",
    "dev/high_school_physics_dev.csv": "5f008c3a44e7b14d86f6c1cbde28892fd0d97ae424e8af9901d75c4ee03972cc",
    "dev/high_school_chemistry_dev.csv": "1ba44aeea98ca22342b6525a3a9ebb62003b2a8289fa42d7c844e2139557ec5b",
    "dev/high_school_mathematics_dev.csv": "d7401d5cbad5ae697bfa480e35d85de8ebf1232589a3c59b010782ee49cbe18c",
    "dev/high_school_computer_science_dev.csv": "5de3800dfbbfaa89050413a765deaf774fdb0611e370951383fb50fac774663e",
    "dev/high_school_geography_dev.csv": "e43fc27b9fa8b808773a2871007b39e012a1cc1ec902f85d85cc9c27cc12883d",
}

#: mLAMA 1.1 files under the zip's `mlama1.1/` folder (six languages x five relations + templates).
MLAMA_SHA256: dict[str, str] = {
    "ar/P19.jsonl": "2592faca67989c54f709bfa59363b61b508a9360aa51b5af50f0b27c45ee9863",
    "ar/P108.jsonl": "18c99faf8ab0b47c8c0272723dc6ebe391df40e64d06f0d68e186231a6118e8f",
    "ar/P1303.jsonl": "e8e672a77c9a12e3dafc63a1057647340d22bbf289e00fa6f7b296be6d2285f8",
    "ar/P159.jsonl": "f739d4d6cc01c6348ce20fb89c477ccfb0eb77716df7ed6d54039560be1d2149",
    "ar/P17.jsonl": "975deed6837b692353f73d769443bd4f66fcf86bbb9f49e3bb319a5bb1ccfdb0",
    "ar/templates.jsonl": "f0d084f4a69d07fee4ded4919420137363ea678849a23957b4199bd85824fa24",
    "en/P19.jsonl": "ecefda81dd7e1c64e03bc19b9be248728d94989a8d6a2ba49d69f77811893dd8",
    "en/P108.jsonl": "0ed22011e79b9bc9221574e15d53632cbed1dea15ab7c1d5c4f6ace4d1138aaa",
    "en/P1303.jsonl": "45efd47e8666cb469f4de38ca2f4af3ee2fb45025be55c347544be40e59c54f0",
    "en/P159.jsonl": "5a29ea9d751fc1ec7e12fba1acef4360a3cdc477d8190e53517540ba126d5bc5",
    "en/P17.jsonl": "6fbdd8f8ff13e836f75be7788fccd95cebf9cc8e76d2ca2415fa874ab3496745",
    "en/templates.jsonl": "760dfc26b5f8a83a09dacc3fa02a6a5dc4abb4e4d370651ff12362a9486b8b51",
    "fr/P19.jsonl": "392da6548b2c5d28d3a68ccae4e6079f7c36ff886cbcd45388a761776cb78d17",
    "fr/P108.jsonl": "2459fd7b1bc609dab5b44b72262ce9b18c76f5f46ef11ea75085ed2db7e8ae52",
    "fr/P1303.jsonl": "0a0f050960d645e6ed00a11960644e3d2bff8de8c1e32c234371df3612d08e85",
    "fr/P159.jsonl": "64815afd765a7152f545794aad174b94a0f6dbd8ad54a268d0cab4a81e7898d6",
    "fr/P17.jsonl": "d75ab5df6e015126459871f867bd273bf5c040000eeca8bbdc22cd4a396f98a0",
    "fr/templates.jsonl": "cfd584367b8770351ef76278cefb030aa93790204c8bd8ee9e171abd3d841a73",
    "ja/P19.jsonl": "3a540e80f49e15ca0b6d8714446ba78cd27dd8333aab5b9b53b19ea497ac1867",
    "ja/P108.jsonl": "0d29e8e1c8251195fb091fb5190074ceced10c847251e86625f999e5b6d3f8c5",
    "ja/P1303.jsonl": "25e3a84d1d74a9e41b8358c94e471b1d24b1a06c857acf83b3e017bb0f5e1620",
    "ja/P159.jsonl": "8b23ec1bf9a44a9074e066cc7c2921ba36988babf17c5dfaf764e3686ee30424",
    "ja/P17.jsonl": "a406bcd14a2d728234f52125842163fa53c21989bb0163b294ee5b286a3bd1cd",
    "ja/templates.jsonl": "9b6e99105c60536b18bad89974ff6892ef6d17dda21a0869cfe91db27429b6e8",
    "ru/P19.jsonl": "7493c78bbc847a91e3e6deb800c1228651dad58839149344b6b374b616ddde3f",
    "ru/P108.jsonl": "16fbc4df519278c8dfde960cdc84f7222e62f42152e13eab13c54f19010911ea",
    "ru/P1303.jsonl": "7b5ab2e288bfde91f7f397811386fa2d1960897884975dff4e0e140e0b109924",
    "ru/P159.jsonl": "756bc87fd3ad52d9b4ac13ec3c8c0749d9ed323c5d89366ee469109c397f8dc3",
    "ru/P17.jsonl": "fc9446fbe453a8da36727205b28d3d8eda0d0b5b6b55be59363243a95f785309",
    "ru/templates.jsonl": "90a889baaa3d06f96fe288d0800890fc7916058f6c058e3b11cfc0e67343191b",
    "zh/P19.jsonl": "e488a8a681c2e83ef9f5e579bea3808cc5aac4eca3d326b138b4c883800e4f66",
    "zh/P108.jsonl": "10101c513fd38851f73a639b09ff284015fb6cd1aaa9e463d7cc558bc68327a2",
    "zh/P1303.jsonl": "82784ea9e15d30997606767800b2db8b411f79f2598f39a73b88ccd4f1e98eae",
    "zh/P159.jsonl": "8d906a0d5519dca46e955ae0b56d6cf3e2b871f763999bb2f83105eca6f9d4d2",
    "zh/P17.jsonl": "78ad3ba5b63b43a8512a5dbfd9e5bf6a077ae95faac7bf02c7aae88895fc7520",
    "zh/templates.jsonl": "013a88dd973f211a84667fd934f8de935cbd2ccf498a31ffe8cf524444f462d1",
}

#: The authors' released datasets at commit dd8142d.
RELEASED_SHA256: dict[str, str] = {
    "subject_qa.json": "0652095093faa2fce38a4670737831a131dc14aa3e473a1958f5236682413d07",
    "language_qa.json": "a559497a63fb2d6e89d3ed7c0b30eefe18297ab2b98d60d4962b4aad025165f2",
}

SHA256: dict[str, dict[str, str]] = {"mmlu": MMLU_SHA256, "mlama": MLAMA_SHA256, "released": RELEASED_SHA256}


class ChecksumError(DatasetError):
    """A raw file's sha256 differs from the pinned digest."""


@dataclass(frozen=True)
class ChecksumMismatch:
    """A local file whose digest differs from the pinned one (see `verify_local`)."""

    file: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.file}: sha256 {self.actual}, expected {self.expected}"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown raw source kind {kind!r} (known: {', '.join(KINDS)})")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def known_files(kind: str, files: Sequence[str] | None = None) -> dict[str, str]:
    """{relative path: sha256} of the pinned files of `kind`, optionally restricted to `files`."""
    _check_kind(kind)
    table = SHA256[kind]
    if files is None:
        return dict(table)
    unknown = [f for f in files if f not in table]
    if unknown:
        raise InputError(f"no pinned checksum for {kind} files {unknown}")
    return {f: table[f] for f in files}


def verify_local(root: str | os.PathLike, kind: str) -> list[ChecksumMismatch]:
    """Compare the pinned files present under `root` (a folder, or one released JSON file) with
    their digests; return the mismatches.

    Mismatches are logged as warnings, not raised: a user may point the config at a newer or
    re-encoded copy on purpose, and the dataset builders validate the content anyway. Files that
    are absent are not reported (a builder that needs one fails naming it).
    """
    root = Path(root)
    table = known_files(kind)
    if root.is_file():  # a single released JSON file, as the config may name it
        table = {root.name: table[root.name]} if root.name in table else {}
        root = root.parent
    mismatches = []
    checked = 0
    for rel, expected in table.items():
        path = root / rel
        if not path.is_file():
            continue
        checked += 1
        actual = sha256_file(path)
        if actual != expected:
            mismatch = ChecksumMismatch(str(path), expected, actual)
            log.warning("raw %s file differs from the pinned copy: %s", kind, mismatch)
            mismatches.append(mismatch)
    log.info("verified %d pinned %s files under %s: %d differ", checked, kind, root, len(mismatches))
    return mismatches


@contextlib.contextmanager
def _staged_dir(dest: Path) -> Iterator[Path]:
    """A temp folder beside `dest` that becomes `dest` on success and is removed on error."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"destination {dest} already exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield staging
        share_permissions(staging)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _verify(path: Path, rel: str, expected: str, origin: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"sha256 mismatch for {rel}: expected {expected}, got {actual}", file=origin)


def _archive_members(archive: Path) -> tuple[str, dict[str, object]]:
    """('tar'|'zip', {member name without leading './': member}) of the regular files."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return "zip", {i.filename.removeprefix("./"): i for i in zf.infolist() if not i.is_dir()}
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            return "tar", {m.name.removeprefix("./"): m for m in tf.getmembers() if m.isfile()}
    raise DatasetError("not a tar or zip archive", file=archive)


def _find_member(names: Sequence[str], rel: str, archive: Path) -> str:
    """The member that is `rel` itself or `rel` under one top folder (`data/`, `mlama1.1/`)."""
    hits = [
        n for n in names if n == rel or (n.count("/") == rel.count("/") + 1 and n.split("/", 1)[1] == rel)
    ]
    if len(hits) != 1:
        what = "no member" if not hits else f"several members {hits}"
        raise DatasetError(f"{what} for {rel}", file=archive)
    return hits[0]


def extract_archive(
    archive: str | os.PathLike, dest: str | os.PathLike, checksums: Mapping[str, str]
) -> Path:
    """Extract the files named in `checksums` from a tar/zip into `dest`, verified.

    Each wanted relative path may sit at the archive's top or under one top folder. Only those
    files are read (by content, never by the archive's own paths, so nothing can escape `dest`).
    Any missing file or digest mismatch raises, leaving `dest` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    fmt, members = _archive_members(archive)
    with _staged_dir(dest) as staging:
        opener = zipfile.ZipFile(archive) if fmt == "zip" else tarfile.open(archive)
        with opener as arc:
            for rel, expected in checksums.items():
                name = _find_member(list(members), rel, archive)
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = arc.open(members[name]) if fmt == "zip" else arc.extractfile(members[name])
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                _verify(target, rel, expected, f"{archive}:{name}")
    return dest


def _download_url(url: str, target: Path, timeout: float) -> None:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:  # URLError, HTTPError and socket errors are OSErrors
        raise DatasetError(f"download failed ({exc})", file=url) from None


def download(
    kind: str, dest: str | os.PathLike, *, files: Sequence[str] | None = None, timeout: float = 120.0
) -> Path:
    """Fetch a raw source from its pinned public URL into `dest` in the raw layout, verified.

    `kind` is `mmlu` (hendrycks' data.tar), `mlama` (mlama1.1.zip) or `released` (the two JSON
    files at the pinned commit); `files` restricts to some of the pinned relative paths.
    """
    checksums = known_files(kind, files)
    dest = Path(dest)
    if kind == "released":
        with _staged_dir(dest) as staging:
            for rel, expected in checksums.items():
                _download_url(URLS["released"][rel], staging / rel, timeout)
                _verify(staging / rel, rel, expected, URLS["released"][rel])
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=dest.parent) as tmp:
        archive = Path(tmp) / Path(URLS[kind]).name
        _download_url(URLS[kind], archive, timeout)
        return extract_archive(archive, dest, checksums)


def download_released_file(name: str, dest: str | os.PathLike, *, timeout: float = 120.0) -> Path:
    """Fetch one released JSON file (`subject_qa.json` or `language_qa.json`) to the file `dest`, verified.

    Written to a temp file beside `dest` and moved into place only if its sha256 matches.
    """
    expected = known_files("released", [name])[name]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        target = Path(tmp) / name
        _download_url(URLS["released"][name], target, timeout)
        _verify(target, name, expected, URLS["released"][name])
        os.replace(target, dest)
    return dest


def resolve_source(
    kind: str, *, local: str | os.PathLike | None = None, dest: str | os.PathLike | None = None
) -> Path:
    """The raw folder to build from: `local` (verified, mismatches only warned) or a fresh download into `dest`."""
    _check_kind(kind)
    if local is not None:
        local = Path(local)
        if not local.is_dir():
            raise DatasetError(f"local {kind} folder not found", file=local)
        verify_local(local, kind)
        return local
    if dest is None:
        raise InputError(f"{kind}: give either a local folder or a download destination")
    return download(kind, dest)
