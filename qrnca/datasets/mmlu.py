"""The domain dataset: MMLU high-school subjects as 3-template multiple-choice queries (docs/method.md §2).

Raw input is the original CSV release, `{root}/{split}/high_school_{subject}_{split}.csv`: headerless
`question,A,B,C,D,answer`, mixed CRLF/LF line endings, quoted fields with embedded newlines, and
sometimes no final newline — so it is read with the csv module (records, not lines).

Selection (decision `selection: first_n`): in file order, the first n rows whose longest rendered
prompt is at most `max_prompt_chars`. The paper does not say which questions it used; the released
subset is in order but biased to short questions, which the length cap imitates.

Four MMLU rows of these subjects repeat an option (e.g. physics test row 100: "0.16 N" twice). By
default such rows are not eligible (`duplicate_options="skip"`, logged); `"error"` rejects the file.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import DatasetError, InputError
from .queries import validate_queries
from .render import LETTERS, PromptTemplate, derive_rng, render_prompt, render_templates
from .instructions import MMLU_TEMPLATES

log = logging.getLogger(__name__)

#: The paper's subjects and question counts (552 queries).
PAPER_SUBJECTS: dict[str, int] = {
    "biology": 100,
    "physics": 100,
    "chemistry": 100,
    "mathematics": 100,
    "computer_science": 52,
    "geography": 100,
}
SPLITS = ("test", "val", "dev")
FILE_PREFIX = "high_school_"


@dataclass(frozen=True)
class MmluRow:
    """One validated CSV record; `row` is its 1-based record number in `file`."""

    file: str
    row: int
    question: str
    options: tuple[str, str, str, str]
    answer: str

    @property
    def gold(self) -> str:
        return self.options[LETTERS.index(self.answer)]

    @property
    def distinct_options(self) -> bool:
        return len(set(self.options)) == len(self.options)


def subject_file(root: str | os.PathLike, subject: str, split: str) -> Path:
    """Path of one subject's CSV in the original release layout."""
    return Path(root) / split / f"{FILE_PREFIX}{subject}_{split}.csv"


def available_subjects(root: str | os.PathLike, split: str) -> list[str]:
    """Short names of the high-school subjects that have a `split` file under `root`."""
    folder = Path(root) / split
    suffix = f"_{split}.csv"
    if not folder.is_dir():
        return []
    return sorted(
        p.name[len(FILE_PREFIX) : -len(suffix)]
        for p in folder.iterdir()
        if p.name.startswith(FILE_PREFIX) and p.name.endswith(suffix)
    )


def read_mmlu_csv(path: str | os.PathLike, *, name: str | None = None) -> list[MmluRow]:
    """Read and validate every record of one MMLU CSV file.

    Each record must have exactly 6 fields, a non-empty question and options, and an answer in A–D;
    otherwise `DatasetError` names the file and the 1-based record number. `name` is the file name
    recorded in each row (default: the path as given).
    """
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise DatasetError("file not found", file=path)
    rows: list[MmluRow] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        record = 0
        try:
            for record, fields in enumerate(reader, start=1):
                if len(fields) != 6:
                    raise DatasetError(
                        f"expected 6 fields (question,A,B,C,D,answer), got {len(fields)}",
                        file=path,
                        row=record,
                    )
                question, *options, answer = fields
                if not question.strip():
                    raise DatasetError("empty question", file=path, row=record)
                for letter, option in zip(LETTERS, options):
                    if not option.strip():
                        raise DatasetError(f"empty option {letter}", file=path, row=record)
                if answer not in LETTERS:
                    raise DatasetError(
                        f"answer must be one of A, B, C, D, got {answer!r}", file=path, row=record
                    )
                rows.append(MmluRow(name, record, question, tuple(options), answer))
        except csv.Error as exc:
            raise DatasetError(f"malformed CSV ({exc})", file=path, row=record + 1) from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"not UTF-8 ({exc.reason})", file=path) from None
    return rows


def prompt_chars(row: MmluRow, templates: Sequence[PromptTemplate] = MMLU_TEMPLATES) -> int:
    """Length in characters of the longest rendered prompt of `row` (independent of option order)."""
    return max(len(render_prompt(t, row.question, row.options)) for t in templates)


def select_first_n(
    rows: Sequence[MmluRow],
    n: int | None,
    *,
    subject: str,
    file: Path,
    max_prompt_chars: int | None = None,
    duplicate_options: str = "skip",
    templates: Sequence[PromptTemplate] = MMLU_TEMPLATES,
) -> list[MmluRow]:
    """Decision `selection: first_n`: the first `n` eligible rows in file order (`n=None`: all of
    them, as for the held-out questions of Table 7).

    Eligible: all prompts at most `max_prompt_chars` long (None = no limit) and four distinct
    options. Fewer eligible rows than `n` raises `DatasetError` naming subject, file and count.
    """
    if duplicate_options not in ("skip", "error"):
        raise InputError(f"duplicate_options must be 'skip' or 'error', got {duplicate_options!r}")
    eligible = []
    for row in rows:
        if not row.distinct_options:
            if duplicate_options == "error":
                raise DatasetError(f"options are not distinct: {list(row.options)!r}", file=file, row=row.row)
            log.warning("%s, row %d: skipped, options are not distinct: %r", file, row.row, list(row.options))
            continue
        if max_prompt_chars is not None and prompt_chars(row, templates) > max_prompt_chars:
            continue
        eligible.append(row)
    if n is None:
        return eligible
    if len(eligible) < n:
        limit = "" if max_prompt_chars is None else f" with prompts of at most {max_prompt_chars} characters"
        raise DatasetError(
            f"subject {subject!r}: {n} questions requested but only {len(eligible)} of {len(rows)} rows "
            f"are eligible{limit}",
            file=file,
        )
    return eligible[:n]


def mmlu_query(
    row: MmluRow,
    *,
    subject: str,
    split: str,
    seed: int,
    templates: Sequence[PromptTemplate] = MMLU_TEMPLATES,
) -> dict:
    """One query: the row's four options re-shuffled independently for each template."""
    qid = f"mmlu-{subject}-{split}-{row.row:04d}"
    orders = []
    for t_index in range(len(templates)):
        shuffled = list(row.options)
        derive_rng(seed, "mmlu", qid, t_index).shuffle(shuffled)
        orders.append(shuffled)
    prompts, answers, options = render_templates(templates, row.question, orders, row.gold)
    return {
        "id": qid,
        "group": subject,
        "relation": None,
        "fact": f"{row.file}:{row.row}",
        "prompts": prompts,
        "answers": answers,
        "options": options,
        "gold": row.gold,
        "source": {"kind": "mmlu", "file": row.file, "row": row.row},
    }


def build_mmlu(
    root: str | os.PathLike,
    subjects: Mapping[str, int],
    *,
    split: str = "test",
    seed: int = 0,
    max_prompt_chars: int | None = None,
    duplicate_options: str = "skip",
    templates: Sequence[PromptTemplate] | None = None,
) -> list[dict]:
    """Build the domain dataset: for each subject (in the given order) its first n eligible rows.

    `subjects` maps short names (`biology`, ...; see `PAPER_SUBJECTS`) to counts (None: every
    eligible row). A subject with
    no `high_school_{subject}_{split}.csv` under `root` raises `InputError` listing the available
    ones. Every file is fully validated (`read_mmlu_csv`), and the result by `validate_queries`.
    """
    if split not in SPLITS:
        raise InputError(f"unknown MMLU split {split!r} (known: {', '.join(SPLITS)})")
    templates = tuple(templates or MMLU_TEMPLATES)
    if len(templates) != 3:
        raise InputError(f"3 instruction templates are needed, got {len(templates)}")
    known = available_subjects(root, split)
    for subject, n in subjects.items():
        if subject not in known:
            where = Path(root) / split
            raise InputError(
                f"unknown MMLU subject {subject!r}: no {FILE_PREFIX}{subject}_{split}.csv in {where} "
                f"(known: {', '.join(known) or 'none'})"
            )
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InputError(
                f"MMLU subject {subject!r}: count must be a positive integer (or None for all "
                f"rows), got {n!r}"
            )
    queries = []
    for subject, n in subjects.items():
        path = subject_file(root, subject, split)
        rows = read_mmlu_csv(path, name=f"{split}/{path.name}")
        chosen = select_first_n(
            rows,
            n,
            subject=subject,
            file=path,
            max_prompt_chars=max_prompt_chars,
            duplicate_options=duplicate_options,
            templates=templates,
        )
        queries.extend(
            mmlu_query(r, subject=subject, split=split, seed=seed, templates=templates) for r in chosen
        )
    validate_queries(queries)
    return queries
