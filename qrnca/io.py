"""Atomic, deterministic file output and JSON-lines input.

Outputs are written to a temporary file in the destination directory and moved into place with
`os.replace`, so a killed job never leaves a half-written result that Snakemake could mistake for
a finished one. A write that fails (a full disk, a quota, a read-only folder) raises
`OutputError` naming the destination, and leaves neither the temporary file nor a partial
result. Every output gets the same permissions: 0666 less the umask (`OUTPUT_MODE`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DatasetError, OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)
#: The permissions of every output file (folders: `DIR_MODE`).
OUTPUT_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """An `OutputError` naming the file that could not be written and why (e.g. a full disk)."""
    reason = exc.strerror or str(exc)
    if exc.filename and os.fspath(exc.filename) != os.fspath(path):
        reason += f" ({exc.filename})"
    return OutputError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`); on success it replaces `path`,
    on error it is removed. An OSError while writing (ENOSPC...) becomes `OutputError`
    naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, OUTPUT_MODE)  # mkstemp makes 0600; results are meant to be shared
        yield tmp
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def share_permissions(path: str | os.PathLike) -> None:
    """Give a folder tree written through temp folders (0700) and tools that write 0600 files the
    permissions of every other output: folders 0777 and files 0666, less the umask."""
    path = Path(path)
    for entry in [path, *path.rglob("*")]:
        os.chmod(entry, DIR_MODE if entry.is_dir() else OUTPUT_MODE)


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


def read_jsonl_objects(path: str | os.PathLike, required: Iterable[str] = (),
                       what: str = "keys") -> list[tuple[int, dict]]:
    """(1-based line number, object) of every record of a JSON-lines file (`read_jsonl_numbered`),
    each checked to be a JSON object holding the `required` keys (called `what` in the error);
    otherwise `DatasetError` naming file and line."""
    out = []
    for lineno, record in read_jsonl_numbered(path):
        if not isinstance(record, dict):
            raise DatasetError("expected a JSON object", file=Path(path), row=lineno)
        missing = [key for key in required if key not in record]
        if missing:
            raise DatasetError(f"missing {what} {missing}", file=Path(path), row=lineno)
        out.append((lineno, record))
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a malformed line raises `DatasetError` naming file and line."""
    return [record for _, record in read_jsonl_numbered(path)]


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document atomically (indented, non-ASCII kept)."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2)
        fh.write("\n")


def write_csv(path: str | os.PathLike, frame: Any) -> None:
    """Write a pandas DataFrame as CSV atomically: no index column, "\\n" line ends."""
    with atomic_open(path) as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")
