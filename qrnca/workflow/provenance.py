"""Provenance records: what produced each result (auditing them: `qrnca.workflow.lineage`).

Every workflow job ends by writing one JSON record per output file at
`results/provenance/<output path relative to the workdir>.json`. All outputs of a job get the same
record: the rule, its wildcards, the checksum (sha256) and size of every input and output, the
params and the resolved config (plus its sha256), the code version (git commit and whether the
tree was dirty), package versions, host, device and precision, the model and its resolved
revision, seeds, and the wall time.

Why: a table in the paper reproduction is only worth as much as our ability to say which model
revision, which dataset file and which code produced it. Because the records name their inputs
by checksum, `qrnca.workflow.lineage` can walk from any result back to the raw downloads and say,
file by file, whether the bytes on disk are still the ones that were used.

Works without Snakemake: `write_records` takes plain paths and dicts; `record_job` only adapts a
Snakemake `snakemake` script object to it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError
from ..io import write_json

SCHEMA = "qrnca.provenance/1"
PROVENANCE_DIR = Path("results") / "provenance"
PACKAGES = ("torch", "transformers", "tokenizers", "pandas", "numpy", "snakemake", "datasets",
            "seaborn", "qrnca")
# Snakemake writes this marker into directory() outputs after the job: not part of the content.
IGNORED_NAMES = frozenset({".snakemake_timestamp"})
_CHUNK = 1 << 20


class ProvenanceError(InputError):
    """A provenance record is missing or unreadable; the message names the file."""


# --------------------------------------------------------------------------------------------
# checksums

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """sha256 of files keyed by (absolute path, size, mtime_ns), one small JSON file per path.

    Why: the same large input (a local 7B model directory, an attribution shard) reaches many
    jobs; each job would otherwise re-read gigabytes only to record a checksum. Entries are
    written atomically, so concurrent jobs can share the cache. `lineage` does not use it: a
    change check must read the bytes.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _entry(self, path: Path) -> Path:
        key = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()
        return self.directory / key[:2] / f"{key}.json"

    def sha256(self, path: Path) -> str:
        st = path.stat()
        entry = self._entry(path)
        stamp = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        try:
            cached = json.loads(entry.read_text(encoding="utf-8"))
            if all(cached.get(k) == v for k, v in stamp.items()):
                return cached["sha256"]
        except (OSError, ValueError, KeyError):
            pass
        digest = _sha256_file(path)
        try:
            write_json(entry, {**stamp, "sha256": digest})
        except OSError:
            pass  # a read-only results tree still gets its checksum
        return digest


def cache_dir(root: str | os.PathLike = ".") -> Path:
    """Where `HashCache` keeps its entries: in Snakemake's own folder of the workdir, not among
    the results (its entries hold absolute paths and mtimes, which differ between clones)."""
    return Path(root) / ".snakemake" / "qrnca-sha256-cache"


def _iter_dir_files(directory: Path) -> list[tuple[str, Path]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in filenames:
            if name in IGNORED_NAMES:
                continue
            p = Path(dirpath) / name
            files.append((p.relative_to(directory).as_posix(), p))
    return sorted(files)


def checksum(path: str | os.PathLike, cache: HashCache | None = None) -> dict:
    """{"sha256", "size"} of a file, plus "files" for a directory; {"sha256": None, ...} if missing.

    A directory's sha256 is the sha256 of the lines "<relative path>\\t<sha256>\\t<size>\\n" of
    its files in sorted order (Snakemake's `.snakemake_timestamp` marker excluded), so it changes
    when any file's bytes, name or presence change.
    """
    path = Path(path)
    file_sha = cache.sha256 if cache is not None else _sha256_file
    if path.is_file():
        return {"sha256": file_sha(path), "size": path.stat().st_size}
    if path.is_dir():
        h = hashlib.sha256()
        total = 0
        files = _iter_dir_files(path)
        for rel, p in files:
            size = p.stat().st_size
            h.update(f"{rel}\t{file_sha(p)}\t{size}\n".encode("utf-8"))
            total += size
        return {"sha256": h.hexdigest(), "size": total, "files": len(files)}
    return {"sha256": None, "size": None}


# --------------------------------------------------------------------------------------------
# environment facts

def git_info(directory: str | os.PathLike = ".") -> dict:
    """{"commit", "dirty"} of the git work tree containing `directory`; commit "unknown" outside
    one (or without git). Dirty means modified tracked files or untracked, non-ignored files:
    either way the code that ran may not be the commit."""
    def run(*args):
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              text=True, timeout=30)

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = run("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def package_versions(packages: Iterable[str] = PACKAGES) -> dict:
    """Installed versions (None when not installed) and the Python version."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict:
    """Host name, platform, and the SLURM job id when running under SLURM."""
    info = {"hostname": socket.gethostname(), "platform": platform.platform()}
    if os.environ.get("SLURM_JOB_ID"):
        info["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    torch = sys.modules.get("torch")  # only if the job used torch: importing it costs seconds
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["cuda"] = {"devices": [torch.cuda.get_device_name(i)
                                            for i in range(torch.cuda.device_count())],
                                "version": torch.version.cuda}
        except Exception:  # noqa: BLE001 - best effort, never fail a finished job over this
            pass
    return info


def model_provenance(model: Any, spec: Mapping | Any) -> dict:
    """What identifies the model a job used: its config name, hub id, requested revision, the
    commit that revision resolved to (from `model.config._commit_hash` when transformers sets it,
    else from the local hub cache, else the revision itself when it is a full commit hash), the
    local path for local models, class and dtype."""
    def get(key):
        if isinstance(spec, Mapping):
            return spec.get(key)
        return getattr(spec, key, None)

    hf_id, revision, path = get("hf_id"), get("revision"), get("path")
    config = getattr(model, "config", None)
    resolved = getattr(config, "_commit_hash", None) if config is not None else None
    if not resolved and hf_id and not path:
        resolved = _cached_commit(hf_id, revision)
    if not resolved and revision and len(str(revision)) == 40 and _is_hex(str(revision)):
        resolved = str(revision)
    out = {"name": get("name"), "hf_id": hf_id, "revision": revision,
           "resolved_revision": resolved, "class": type(model).__name__}
    if path:
        out["path"] = workdir_path(path, Path.cwd())
    elif config is not None and getattr(config, "_name_or_path", None):
        name_or_path = str(config._name_or_path)
        if Path(name_or_path).exists():
            out["path"] = workdir_path(name_or_path, Path.cwd())
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        out["dtype"] = str(dtype).replace("torch.", "")
    return out


def model_identity(spec: Mapping, root: str | os.PathLike = ".") -> dict:
    """What the weights a job loads are, without loading them: name, hub id, requested and
    resolved revision (the local hub cache's snapshot), and for a local directory its path and
    the sha256 over its files (`checksum`, through the shared `HashCache`, so a 7B directory is
    read once). Two runs with equal identities used the same weights."""
    hf_id, revision, path = spec.get("hf_id"), spec.get("revision"), spec.get("path")
    out = {"name": spec.get("name"), "hf_id": hf_id, "revision": revision}
    if path:
        out["path"] = workdir_path(path, Path(root))
        out["sha256"] = checksum(Path(path), HashCache(cache_dir(root)))["sha256"]
    elif hf_id:
        out["resolved_revision"] = _cached_commit(hf_id, revision) or revision
    return out


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s.lower())


def _cached_commit(hf_id: str, revision: str | None) -> str | None:
    """The snapshot commit of `hf_id` at `revision` in the local hub cache, without network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(hf_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - no hub library or an odd cache: just unknown
        return None
    if isinstance(hit, str):
        parts = Path(hit).parts
        if "snapshots" in parts:
            i = parts.index("snapshots")
            if i + 1 < len(parts):
                return parts[i + 1]
    return None


# --------------------------------------------------------------------------------------------
# records

def _jsonable(obj: Any) -> Any:
    """Params and config as JSON: mappings and sequences recursively, paths as strings, numpy
    scalars as numbers, anything else by repr (so a record never fails to write)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    names = getattr(obj, "_names", None)  # a Snakemake Namedlist
    if isinstance(names, dict) and isinstance(obj, list):
        if names:
            out = {name: _jsonable(getattr(obj, name)) for name in names}
            positional = _unnamed_items(obj, names)
            if positional:
                out["_positional"] = [_jsonable(v) for v in positional]
            return out
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return repr(obj)


def _unnamed_items(nl: list, names: dict) -> list:
    covered = set()
    for span in names.values():
        start, end = span if isinstance(span, tuple) else (span, span + 1)
        covered.update(range(start, (end if end is not None else start + 1)))
    return [v for i, v in enumerate(nl) if i not in covered]


def _named_paths(files: Any) -> list[tuple[str | None, str]]:
    """(name or None, path) for every path in a Snakemake Namedlist, a mapping name -> path(s),
    or a plain iterable of paths."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        return [(None, os.fspath(files))]
    if isinstance(files, Mapping):
        out = []
        for name, value in files.items():
            out += [(str(name), p) for _, p in _named_paths(value)]
        return out
    names = getattr(files, "_names", None)
    items = [os.fspath(p) for p in files]
    labels: list[str | None] = [None] * len(items)
    if isinstance(names, dict):
        for name, span in names.items():
            start, end = span if isinstance(span, tuple) else (span, span + 1)
            for i in range(start, end if end is not None else start + 1):
                if 0 <= i < len(labels):
                    labels[i] = name
    return list(zip(labels, items))


def workdir_path(path: str | os.PathLike, root: Path) -> str:
    """A path as recorded: relative to the workdir (posix) when inside it, else absolute."""
    base = Path(root).resolve()
    p = Path(path)
    absolute = Path(os.path.normpath(p if p.is_absolute() else base / p))
    for candidate in (absolute, absolute.resolve()):  # the second for a path through a symlink
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            continue
    return absolute.as_posix()


def record_path(output: str | os.PathLike, root: str | os.PathLike = ".",
                provenance_dir: str | os.PathLike = PROVENANCE_DIR) -> Path:
    """Where the record of `output` lives: <root>/<provenance_dir>/<output relative to root>.json
    (an output outside the workdir keeps its absolute path below `_abs/`)."""
    root = Path(root)
    rel = workdir_path(output, root)
    if rel.startswith("/"):
        rel = "_abs" + rel
    return root / provenance_dir / (rel + ".json")


#: Inputs listed file by file only so that Snakemake sees in-place edits inside a local folder
#: (rules/common.smk `local_files`); the folder's own entry (its sha256 over every file) covers
#: them, so records do not repeat them.
LISTED_FILES = frozenset({"raw_files", "model_files", "heldout_files"})
#: Record fields that differ between two runs of the same job (results/provenance is compared
#: without them, e.g. tests/result_comparison.py).
TIMING_FIELDS = ("started", "finished", "wall_time_s", "timing")


def _file_entries(files: Any, root: Path, cache: HashCache | None) -> list[dict]:
    out = []
    for name, path in _named_paths(files):
        if name in LISTED_FILES:
            continue
        p = Path(path)
        entry = {"path": workdir_path(p, root)}
        if name:
            entry["name"] = name
        entry.update(checksum(p if p.is_absolute() else root / p, cache))
        out.append(entry)
    return out


def _find_seeds(obj: Any, prefix: str = "") -> dict:
    """Every value under a key containing "seed", keyed by its dotted path."""
    found = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if "seed" in str(k).lower() and not isinstance(v, (Mapping, list)):
                found[key] = v
            else:
                found.update(_find_seeds(v, key))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.update(_find_seeds(v, f"{prefix}[{i}]"))
    return found


def _config_digest(config: Any) -> str:
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def build_record(outputs: Any, inputs: Any, rule: str, params: Any = None,
                 extra: Mapping | None = None, started: float | None = None, *,
                 wildcards: Mapping | None = None, config: Mapping | None = None,
                 resources: Mapping | None = None, threads: int | None = None,
                 log: Any = None, root: str | os.PathLike = ".",
                 cache: HashCache | None = None) -> dict:
    """The record of one finished job (see the module docstring for what it holds and why).

    extra: what only the script knows. Keys with a meaning here: "model" (a dict, see
    `model_provenance`), "device", "precision" (or "dtype"), "seeds" (merged over the seeds found
    in params); every other key is kept under "extra".
    """
    root = Path(root)
    finished = time.time()
    extra = dict(extra or {})
    params_json = _jsonable(params) if params is not None else {}
    seeds = _find_seeds(params_json)
    seeds.update(_jsonable(extra.pop("seeds", {}) or {}))
    record = {
        "schema": SCHEMA,
        "rule": rule,
        "wildcards": _jsonable(dict(wildcards.items()) if hasattr(wildcards, "items") else wildcards or {}),
        "inputs": _file_entries(inputs, root, cache),
        "outputs": _file_entries(outputs, root, cache),
        "log": [p for _, p in _named_paths(log)],
        "params": params_json,
        "config": {"sha256": _config_digest(config) if config is not None else None,
                   "resolved": _jsonable(config) if config is not None else None},
        "code": _code_info(root),
        "packages": package_versions(),
        "host": host_info(),
        "device": _jsonable(extra.pop("device", None)),
        "precision": _jsonable(extra.pop("precision", extra.pop("dtype", None))),
        "model": _jsonable(extra.pop("model", None)),
        "seeds": seeds,
        "threads": threads,
        "resources": _jsonable(resources) if resources is not None else None,
        "started": _iso(started) if started is not None else None,
        "finished": _iso(finished),
        "wall_time_s": round(finished - started, 3) if started is not None else None,
        "timing": _jsonable(extra.pop("timing", None)),
        "extra": _jsonable(extra),
    }
    return record


def _code_info(root: Path) -> dict:
    """The workdir's git state; when the qrnca package that ran lives in another tree (a
    workdir outside the checkout, or an editable install elsewhere), that tree's state too."""
    info = git_info(root)
    package_dir = Path(__file__).resolve().parents[1]
    try:
        package_dir.relative_to(root.resolve())
        return info
    except ValueError:
        pass
    package = {"path": str(package_dir), **git_info(package_dir)}
    if info["commit"] == "unknown":
        return {**package, "workdir": info}
    return {**info, "qrnca": package}


def write_records(outputs: Any, inputs: Any, rule: str, params: Any = None,
                  extra: Mapping | None = None, started: float | None = None, *,
                  wildcards: Mapping | None = None, config: Mapping | None = None,
                  resources: Mapping | None = None, threads: int | None = None,
                  log: Any = None, root: str | os.PathLike = ".",
                  provenance_dir: str | os.PathLike = PROVENANCE_DIR,
                  use_cache: bool = True) -> list[Path]:
    """Write the same record for every output of a job; return the record paths.

    outputs / inputs: paths, a mapping name -> path(s), or a Snakemake Namedlist; directories
    are hashed file by file. Paths are taken relative to `root` (the workdir). Each record is
    written atomically. A missing output is an error: the job claims to have made it.
    """
    root = Path(root)
    cache = HashCache(cache_dir(root)) if use_cache else None
    record = build_record(outputs, inputs, rule, params, extra, started, wildcards=wildcards,
                          config=config, resources=resources, threads=threads, log=log,
                          root=root, cache=cache)
    missing = [o["path"] for o in record["outputs"] if o["sha256"] is None]
    if missing:
        raise ProvenanceError(f"rule {rule}: outputs missing when writing provenance: {missing}")
    paths = []
    for _, out in _named_paths(outputs):
        target = record_path(out, root, provenance_dir)
        write_json(target, record)
        paths.append(target)
    return paths


def _resources_dict(resources: Any) -> dict | None:
    if resources is None:
        return None
    items = resources.items() if hasattr(resources, "items") else []
    # _cores/_nodes are Snakemake bookkeeping; TBD placeholders are not values
    return {k: v for k, v in items if not str(k).startswith("_")}


def record_job(snakemake: Any, *, extra: Mapping | None = None,
               started: float | None = None) -> list[Path]:
    """Write the provenance records of a finished Snakemake script job (call it last).

    Reads rule, input, output, params, wildcards, config, log, threads and resources from the
    `snakemake` object; records go under results/provenance/ in the workdir (the script's cwd).
    """
    return write_records(
        outputs=snakemake.output,
        inputs=snakemake.input,
        rule=snakemake.rule,
        params=getattr(snakemake, "params", None),
        extra=extra,
        started=started,
        wildcards=getattr(snakemake, "wildcards", None),
        config=getattr(snakemake, "config", None),
        resources=_resources_dict(getattr(snakemake, "resources", None)),
        threads=getattr(snakemake, "threads", None),
        log=getattr(snakemake, "log", None),
        root=Path.cwd(),
    )
