"""Dataset construction (docs/method.md §2): raw MMLU / mLAMA / released files -> multiple-choice queries.

Every builder returns a list of queries in the format of docs/formats.md "Dataset", already
checked by `validate_queries`; `write_dataset` writes them atomically as JSON lines.

- `build_mmlu(root, subjects, ...)`: the domain dataset from the MMLU CSV release.
- `build_mlama(root, languages, relations, ...)`: the language dataset from mLAMA 1.1.
- `convert_released(path)`: the authors' `subject_qa.json` / `language_qa.json`.
- `fetch`: pinned sources, sha256 verification, `download`, `verify_local`.
"""

from .from_config import build_from_spec
from .instructions import MLAMA_TEMPLATES, MMLU_TEMPLATES, mlama_templates
from .mlama import PAPER_LANGUAGES, PAPER_RELATIONS, build_mlama
from .mmlu import PAPER_SUBJECTS, build_mmlu
from .queries import read_dataset, validate_queries, write_dataset
from .released import convert_released
from .render import LETTERS, PromptTemplate, derive_rng, parse_options, render_prompt

__all__ = [
    "LETTERS",
    "MLAMA_TEMPLATES",
    "MMLU_TEMPLATES",
    "PAPER_LANGUAGES",
    "PAPER_RELATIONS",
    "PAPER_SUBJECTS",
    "PromptTemplate",
    "build_from_spec",
    "build_mlama",
    "build_mmlu",
    "convert_released",
    "derive_rng",
    "mlama_templates",
    "parse_options",
    "read_dataset",
    "render_prompt",
    "validate_queries",
    "write_dataset",
]
