"""Atomic, deterministic file output and JSON-lines input.

Outputs are written to a temporary file in the destination directory and moved into place with
`os.replace`, so a killed job never leaves a half-written result that Snakemake could mistake for
a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DatasetError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def share_permissions(path: str | os.PathLike) -> None:
    """Give a folder tree written through temp folders (0700) and tools that write 0600 files the
    permissions of every other output: folders 0777 and files 0666, less the umask."""
    path = Path(path)
    for entry in [path, *path.rglob("*")]:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside `path` for writing; it replaces `path` only on success."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline="" if "b" not in mode else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def dumps_line(record: Any) -> str:
    """One JSON line: compact, non-ASCII kept, keys in insertion order."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write `records` as JSON lines atomically; return how many were written."""
    n = 0
    with atomic_open(path) as fh:
        for record in records:
            fh.write(dumps_line(record))
            n += 1
    return n


def read_jsonl_numbered(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(1-based line number, record) of every non-blank line of a JSON-lines file, so that
    callers can name the line of a bad record; a missing file or malformed line raises
    `DatasetError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("file not found", file=path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"invalid JSON ({exc.msg})", file=path, row=lineno) from None
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a malformed line raises `DatasetError` naming file and line."""
    return [record for _, record in read_jsonl_numbered(path)]


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document atomically (indented, non-ASCII kept)."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
