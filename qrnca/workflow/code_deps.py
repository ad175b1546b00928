"""The library files a workflow script runs: its `qrnca` imports, followed transitively.

Snakemake reruns a `script:` rule when the script changes, but the science lives in this
library, which the thin scripts only call. The rules therefore list, as inputs, every library
file the script imports -- directly or through other library modules, at module level or inside
a function (a lazy import runs too) -- together with the `__init__.py` of every package on the
way (importing `qrnca.datasets.fetch` runs `qrnca/datasets/__init__.py`). Editing a library
function then reruns exactly the rules whose scripts reach it, and the provenance record of each
output lists those files with their checksums.

Not followed: `INFRASTRUCTURE`, the job wrapper (logging, thread limits) and the provenance
writer. They shape how a job runs and what is recorded about it, never the bytes of a result,
so editing them reruns nothing (the provenance records say which commit wrote them).

The walk is static (`ast`), so it needs no import of torch and costs milliseconds.
"""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

PACKAGE = "qrnca"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Modules whose edits never change a result (see the module docstring).
INFRASTRUCTURE = frozenset({"qrnca.workflow.job", "qrnca.workflow.provenance"})


def _module_file(module: str) -> Path | None:
    """The source file of a `qrnca` module or package (None when there is none)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str | None) -> set[str]:
    """Absolute names of every `qrnca` module imported anywhere in `path`, including the
    parent packages that importing them runs and the submodules a `from pkg import name`
    may name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    out = set()
    for name in found:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if _module_file(prefix) is not None:
                out.add(prefix)
    return out


@functools.lru_cache(maxsize=None)
def _closure(script: str) -> tuple[str, ...]:
    todo = list(_imports(Path(script), None))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module in INFRASTRUCTURE:
            continue
        seen.add(module)
        path = _module_file(module)
        todo.extend(_imports(path, module) - seen)
    return tuple(sorted(str(_module_file(m)) for m in seen))


def script_dependencies(script: str | os.PathLike, relative_to: str | os.PathLike | None = None
                        ) -> list[str]:
    """Sorted paths of the library files `script` runs (see the module docstring): relative to
    `relative_to` (e.g. the workdir) when inside it, else absolute."""
    files = _closure(str(Path(script).resolve()))
    if relative_to is None:
        return list(files)
    base = Path(relative_to).resolve()
    out = []
    for f in files:
        try:
            out.append(Path(f).relative_to(base).as_posix())
        except ValueError:
            out.append(f)
    return out


def module_of(path: str | os.PathLike) -> str:
    """The dotted module name of a library file (e.g. `qrnca.neurons.selection`)."""
    return _module_name(Path(path))
