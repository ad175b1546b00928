"""Table, figure and data jobs import neither torch nor transformers.

Importing torch and transformers costs seconds per job (tens of seconds on a loaded machine),
against well under a second of work for a table or a figure, and those jobs are most of a run.
Every workflow script is either one of `MODEL_SCRIPTS` (it runs, trains, downloads or converts a
model) or must run without torch. Two checks, each per script:

- at run time: a fresh interpreter runs every import statement of the script (wherever it
  stands) and the job wrapper's thread limit, then neither `torch` nor `transformers` is in
  `sys.modules`;
- statically: no library file the script reaches (`qrnca.workflow.code_deps`, plus the job wrapper and the
  provenance writer it leaves out) imports them anywhere, not even inside a function, so no code
  path of the job can load them later.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qrnca.workflow.code_deps import INFRASTRUCTURE, PACKAGE_DIR, script_dependencies

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow_scripts"
HEAVY = ("torch", "transformers")
#: The scripts that legitimately load torch: they run, train, download or convert a model.
MODEL_SCRIPTS = frozenset({
    "attribute", "download_model", "evaluate", "fetch_package_model", "logprob_ranges",
    "predict_neurons", "score_accuracy", "table5", "train_demo_model",
})


def rule_scripts() -> set[str]:
    """The scripts the workflow's rules run (`script: "../workflow_scripts/NAME.py"`)."""
    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])
    return set(re.findall(r"workflow_scripts/(\w+)\.py", text))


TORCH_FREE = sorted(rule_scripts() - MODEL_SCRIPTS)


def _import_statements(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [ast.unparse(node) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def _heavy_imports(path: Path) -> list[str]:
    """`file:line name` of every torch / transformers import anywhere in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [f"{path.name}:{node.lineno} {name}" for name in names
                  if name.split(".")[0] in HEAVY]
    return found


def _library_files(script: str) -> list[Path]:
    files = [Path(f) for f in script_dependencies(SCRIPTS / f"{script}.py")]
    infrastructure = [PACKAGE_DIR.parent.joinpath(*m.split(".")).with_suffix(".py")
                      for m in sorted(INFRASTRUCTURE)]
    return files + [f for f in infrastructure if f.is_file()]


def test_every_script_is_run_by_a_rule_and_the_allowlist_is_current():
    on_disk = {p.stem for p in SCRIPTS.glob("*.py")}
    assert on_disk == rule_scripts(), on_disk ^ rule_scripts()
    assert MODEL_SCRIPTS <= on_disk, MODEL_SCRIPTS - on_disk
    assert len(TORCH_FREE) >= 10  # tables, figures, neurons, datasets, the comparison


def test_the_static_check_sees_torch_where_a_model_runs():
    found = [hit for f in _library_files("evaluate") for hit in _heavy_imports(f)]
    assert any(hit.endswith(" torch") for hit in found), found


@pytest.mark.parametrize("script", TORCH_FREE)
def test_library_code_of_the_script_never_imports_torch(script):
    found = [hit for f in _library_files(script) for hit in _heavy_imports(f)]
    found += _heavy_imports(SCRIPTS / f"{script}.py")
    assert found == [], f"{script}.py reaches {found}"


@pytest.mark.parametrize("script", TORCH_FREE)
def test_the_script_imports_without_torch(script):
    code = "\n".join([
        *_import_statements(SCRIPTS / f"{script}.py"),
        "from qrnca.workflow.job import limit_threads",
        "limit_threads(1)",
        "import sys",
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))",
    ])
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]", f"{script}.py imports {run.stdout.strip()}"
