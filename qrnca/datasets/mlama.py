"""The language dataset: the same mLAMA 1.1 facts asked in several languages (docs/method.md §2).

Raw input: `{root}/{lang}/{PID}.jsonl` (one fact per line: `sub_label`, `obj_label`, `uuid`,
`lineid`, ...) and `{root}/{lang}/templates.jsonl` (`relation`, `template` with `[X]`, `[Y]`).

Per relation, the candidate facts are those whose `uuid` occurs in every requested language,
ordered by (`lineid`, `uuid`); `facts_per_relation` of them are chosen (decision
`fact_selection`, default a seeded `sample`; `first` takes the first ones). The question is the
language's template with `[X]` filled by the subject and `[Y]` left literal. The options are the
gold object plus three distractors drawn from the other distinct objects of the same relation in
the same language, drawn and shuffled independently for each template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DatasetError, InputError
from ..io import read_jsonl_numbered, read_jsonl_objects
from .instructions import mlama_templates
from .queries import validate_queries
from .render import LETTERS, PromptTemplate, derive_rng, render_templates

PAPER_LANGUAGES = ("ar", "en", "fr", "ja", "ru", "zh")
PAPER_RELATIONS = ("P19", "P108", "P1303", "P159", "P17")
FACT_SELECTIONS = ("sample", "first")
_FACT_KEYS = ("sub_label", "obj_label", "uuid", "lineid")


@dataclass(frozen=True)
class Fact:
    """One validated line of a relation file; `row` is its 1-based line number in `file`."""

    file: str
    row: int
    uuid: str
    lineid: int
    sub_label: str
    obj_label: str


def read_templates(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """`templates.jsonl` as {relation: (template, line number)}; a relation listed twice is an error."""
    path = Path(path)
    templates: dict[str, tuple[str, int]] = {}
    for lineno, obj in read_jsonl_numbered(path):
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("relation"), str)
            or not isinstance(obj.get("template"), str)
        ):
            raise DatasetError(
                "expected an object with string 'relation' and 'template'", file=path, row=lineno
            )
        if obj["relation"] in templates:
            raise DatasetError(
                f"relation {obj['relation']!r} listed twice (first at row "
                f"{templates[obj['relation']][1]})",
                file=path,
                row=lineno,
            )
        templates[obj["relation"]] = (obj["template"], lineno)
    return templates


def read_facts(path: str | os.PathLike, *, name: str | None = None) -> list[Fact]:
    """Read and validate one relation file; a bad line raises `DatasetError` naming file and line."""
    path = Path(path)
    facts: list[Fact] = []
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl_objects(path, _FACT_KEYS):
        for key in ("sub_label", "obj_label", "uuid"):
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise DatasetError(
                    f"{key!r} must be a non-empty string, got {obj[key]!r}", file=path, row=lineno
                )
        if not isinstance(obj["lineid"], int) or isinstance(obj["lineid"], bool):
            raise DatasetError(f"'lineid' must be an integer, got {obj['lineid']!r}", file=path, row=lineno)
        if obj["uuid"] in seen:
            raise DatasetError(
                f"uuid {obj['uuid']!r} repeated (first at row {seen[obj['uuid']]})", file=path, row=lineno
            )
        seen[obj["uuid"]] = lineno
        facts.append(
            Fact(name or str(path), lineno, obj["uuid"], obj["lineid"], obj["sub_label"], obj["obj_label"])
        )
    return facts


def _check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", ".."):
        raise InputError(f"invalid mLAMA {kind} {value!r}")
    return value


def distractor_pool(facts: Sequence[Fact], gold: str) -> list[str]:
    """Distinct object labels of a relation file, in first-occurrence order, without `gold`."""
    return [label for label in dict.fromkeys(f.obj_label for f in facts) if label != gold]


def choose_facts(
    candidates: Sequence[str],
    k: int,
    *,
    relation: str,
    languages: Sequence[str],
    seed: int,
    fact_selection: str,
) -> list[str]:
    """Pick `k` of the ordered candidate uuids, keeping their order."""
    if len(candidates) < k:
        raise InputError(
            f"relation {relation}: {k} facts requested but only {len(candidates)} are present in all of "
            f"the languages {', '.join(languages)}"
        )
    if fact_selection == "first":
        return list(candidates[:k])
    picked = set(derive_rng(seed, "mlama-facts", relation).sample(range(len(candidates)), k))
    return [uuid for i, uuid in enumerate(candidates) if i in picked]


def build_mlama(
    root: str | os.PathLike,
    languages: Sequence[str],
    relations: Sequence[str],
    *,
    facts_per_relation: int = 20,
    seed: int = 0,
    fact_selection: str = "sample",
    instructions: Mapping[str, Sequence[PromptTemplate | Mapping[str, Any]]] | None = None,
) -> list[dict]:
    """Build the language dataset, ordered by language, then relation, then (`lineid`, `uuid`).

    `instructions` maps extra (or overriding) language codes to 3 templates, each a
    `PromptTemplate` or a dict with `instruction`, `question_line`, `closing`, `response`.
    Unknown language (no templates) or relation (no template or file) raises `InputError`;
    malformed files raise `DatasetError` naming file and line.
    """
    root = Path(root)
    if fact_selection not in FACT_SELECTIONS:
        raise InputError(f"fact_selection must be one of {FACT_SELECTIONS}, got {fact_selection!r}")
    if (
        not isinstance(facts_per_relation, int)
        or isinstance(facts_per_relation, bool)
        or facts_per_relation < 1
    ):
        raise InputError(f"facts_per_relation must be a positive integer, got {facts_per_relation!r}")
    languages = [_check_name("language", lang) for lang in languages]
    relations = [_check_name("relation", rel) for rel in relations]
    for kind, values in (("language", languages), ("relation", relations)):
        if not values:
            raise InputError(f"no mLAMA {kind}s given")
        if len(set(values)) != len(values):
            raise InputError(f"mLAMA {kind}s listed twice: {values}")
    prompt_templates = {lang: mlama_templates(lang, instructions) for lang in languages}

    questions: dict[tuple[str, str], str] = {}  # (lang, relation) -> template with [Y] left
    facts: dict[tuple[str, str], list[Fact]] = {}
    for lang in languages:
        if not (root / lang).is_dir():
            raise DatasetError(f"no data for language {lang!r}", file=root / lang)
        template_path = root / lang / "templates.jsonl"
        templates = read_templates(template_path)
        for rel in relations:
            if rel not in templates:
                raise InputError(
                    f"unknown relation {rel!r} for language {lang!r}: not in {template_path} "
                    f"(known: {', '.join(sorted(templates))})"
                )
            template, lineno = templates[rel]
            for slot in ("[X]", "[Y]"):
                if slot not in template:
                    raise DatasetError(
                        f"template for {rel} lacks {slot}: {template!r}", file=template_path, row=lineno
                    )
            questions[lang, rel] = template
            rel_path = root / lang / f"{rel}.jsonl"
            if not rel_path.is_file():
                raise InputError(f"unknown relation {rel!r} for language {lang!r}: no file {rel_path}")
            facts[lang, rel] = read_facts(rel_path, name=f"{lang}/{rel}.jsonl")

    chosen: dict[str, list[str]] = {}
    for rel in relations:
        by_lang = [{f.uuid: f for f in facts[lang, rel]} for lang in languages]
        common = set(by_lang[0]).intersection(*by_lang[1:])
        # lineid is consistent across languages in mLAMA; min() keeps the order independent of
        # the language order should a copy disagree.
        order = sorted(common, key=lambda u: (min(d[u].lineid for d in by_lang), u))
        chosen[rel] = choose_facts(
            order,
            facts_per_relation,
            relation=rel,
            languages=languages,
            seed=seed,
            fact_selection=fact_selection,
        )

    queries = []
    for lang in languages:
        for rel in relations:
            rel_facts = facts[lang, rel]
            by_uuid = {f.uuid: f for f in rel_facts}
            for uuid in chosen[rel]:
                fact = by_uuid[uuid]
                queries.append(
                    _mlama_query(
                        fact,
                        rel_facts,
                        lang=lang,
                        relation=rel,
                        question=questions[lang, rel].replace("[X]", fact.sub_label),
                        templates=prompt_templates[lang],
                        seed=seed,
                        root=root,
                    )
                )
    validate_queries(queries)
    return queries


def _mlama_query(
    fact: Fact,
    rel_facts: Sequence[Fact],
    *,
    lang: str,
    relation: str,
    question: str,
    templates: Sequence[PromptTemplate],
    seed: int,
    root: Path,
) -> dict:
    qid = f"mlama-{lang}-{relation}-{fact.uuid}"
    pool = distractor_pool(rel_facts, fact.obj_label)
    if len(pool) < len(LETTERS) - 1:
        raise DatasetError(
            f"relation {relation} has only {len(pool)} objects other than {fact.obj_label!r}; "
            f"{len(LETTERS) - 1} distractors are needed",
            file=root / fact.file,
        )
    orders = []
    for t_index in range(len(templates)):
        rng = derive_rng(seed, "mlama", qid, t_index)
        shuffled = [fact.obj_label, *rng.sample(pool, len(LETTERS) - 1)]
        rng.shuffle(shuffled)
        orders.append(shuffled)
    prompts, answers, options = render_templates(templates, question, orders, fact.obj_label)
    return {
        "id": qid,
        "group": lang,
        "relation": relation,
        "fact": fact.uuid,
        "prompts": prompts,
        "answers": answers,
        "options": options,
        "gold": fact.obj_label,
        "source": {"kind": "mlama", "file": fact.file, "row": fact.row},
    }
