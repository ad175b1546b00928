"""A small synthetic world written in the real raw formats, for the embedded demo.

The demo machines cannot download weights or hub data, and a random-weight model knows nothing,
so the demo carries its own knowledge: this module invents facts and writes them exactly as the
real inputs are laid out (docs/formats.md "Raw inputs"), so that the normal dataset builders
(`qrnca.datasets.mmlu.build_mmlu`, `qrnca.datasets.mlama.build_mlama`) read them unchanged and
a tiny model trained on them (`qrnca.demo.model`) has facts for QRNCA to find.

Layout under `root`:

    mmlu/{test,val,dev}/high_school_{subject}_{split}.csv   headerless question,A,B,C,D,answer
    mlama/{lang}/{PID}.jsonl                                sub_uri,obj_uri,obj_label,sub_label,lineid,uuid
    mlama/{lang}/templates.jsonl                            relation,template ([X] ... [Y])
    mlama/instructions.json                                 {lang: [3 prompt templates]} for build_mlama
    statements.txt                                          every fact as one plain sentence per line

Domains reuse real MMLU subject names (the builder knows only those) with invented content: each
subject has two relations between invented entities (organisms, towns, particles) and a small
pool of invented attribute values, so the four options of a question are always from the same
subject's vocabulary. The facts of the `test`, `val` and `dev` splits are disjoint; every fact,
held-out ones included, is stated once in `statements.txt`, which the demo model also reads, so the
held-out `val` questions (neuron-based prediction, Table 7) are about things the model was told
but never quizzed on.

Languages are made-up codes (`xa`, `xb`, ...). Each is a deterministic word cipher of one base
vocabulary: every base word, names included, has its own invented spelling per language, so the
same fact (same `uuid`) is expressed with disjoint words in each language, as distinct languages
are. The instruction templates are the builder's English mLAMA templates put through the same
cipher (`[Y]`, punctuation and layout are kept).

Everything is drawn from `random.Random(seed)` in a fixed order: the same seed gives
byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..datasets.render import LETTERS
from ..errors import InputError
from ..io import atomic_open

MMLU_SPLITS = ("test", "val", "dev")
DEFAULT_SUBJECTS = ("biology", "geography", "physics")
DEFAULT_LANGUAGES = ("xa", "xb", "xc")
DEFAULT_RELATIONS = ("P19", "P17")
DEFAULT_QUESTIONS = {"test": 24, "val": 8, "dev": 5}


@dataclass(frozen=True)
class _DomainRelation:
    """One kind of fact of a subject: how it is asked, how it is stated, what its values look like."""

    question: str   # "{x}" = entity
    statement: str  # "{x}" = entity, "{y}" = value
    value: str      # "{w}" = invented word (capitalised when the pattern starts with it)


@dataclass(frozen=True)
class _Subject:
    capitalised_entities: bool
    relations: tuple[_DomainRelation, ...]


SUBJECTS: dict[str, _Subject] = {
    "biology": _Subject(False, (
        _DomainRelation("Which organ does the {x} have?", "The {x} has the {y}.", "{w} gland"),
        _DomainRelation("Which enzyme does the {x} produce?", "The {x} produces {y}.", "{w}ase"),
    )),
    "geography": _Subject(True, (
        _DomainRelation("In which region is the town of {x}?", "The town of {x} is in {y}.", "{W} Valley"),
        _DomainRelation("Which river flows through the town of {x}?", "The {y} flows through the town of {x}.",
                        "{W} River"),
    )),
    "physics": _Subject(False, (
        _DomainRelation("What charge does the {x} particle carry?", "The {x} particle carries {y}.",
                        "{w} charge"),
        _DomainRelation("Which force binds the {x} particle?", "The {x} particle is bound by the {y}.",
                        "{w} force"),
    )),
    "chemistry": _Subject(False, (
        _DomainRelation("Which gas does the {x} compound release?", "The {x} compound releases {y}.",
                        "{w} gas"),
        _DomainRelation("Which metal does the {x} ore contain?", "The {x} ore contains {y}.", "{w}ium"),
    )),
}


@dataclass(frozen=True)
class _MlamaRelation:
    """An mLAMA relation in the base vocabulary: its template and the shapes of subject and object."""

    template: str
    subject_words: int  # a person has two name words, a place or firm one
    object_prefix: str  # kind tag for the invented object QIDs


# The English mLAMA templates of the five paper relations (see ../shared/data README).
MLAMA_RELATIONS: dict[str, _MlamaRelation] = {
    "P19": _MlamaRelation("[X] was born in [Y] .", 2, "city"),
    "P108": _MlamaRelation("[X] works for [Y] .", 2, "firm"),
    "P1303": _MlamaRelation("[X] plays [Y] .", 2, "instrument"),
    "P159": _MlamaRelation("The headquarter of [X] is in [Y] .", 1, "city"),
    "P17": _MlamaRelation("[X] is located in [Y] .", 1, "country"),
}

# Syllable inventories: the base world's invented words, then one per made-up language, so the
# languages also look different from each other.
_BASE_SOUNDS = ("bdfgklmnprstvz", "aeiou", "lnrs")
_LANGUAGE_SOUNDS = (
    ("kptmnh", "aiu", "nk"),
    ("lrsvzj", "eoa", "rs"),
    ("bdgfwy", "eiou", "dl"),
    ("ctqxbn", "auo", "xt"),
    ("mnlrpv", "iey", "mp"),
)
_WORD = re.compile(r"[A-Za-z]+")
_SLOT = re.compile(r"(\[[XY]\])")


class _WordFactory:
    """Invented words, unique across the whole world and never equal to a reserved word."""

    def __init__(self, rng: random.Random, reserved: set[str]):
        self.rng = rng
        self.used = {w.lower() for w in reserved}

    def word(self, sounds=_BASE_SOUNDS, syllables=(2, 3)) -> str:
        consonants, vowels, finals = sounds
        for _ in range(10_000):
            n = self.rng.choice(syllables)
            parts = [self.rng.choice(consonants) + self.rng.choice(vowels) for _ in range(n)]
            if self.rng.random() < 0.4:
                parts.append(self.rng.choice(finals))
            candidate = "".join(parts)
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise InputError("the demo world ran out of invented words; use fewer facts")


class _Cipher:
    """A word cipher into one made-up language: the same base word always gets the same spelling."""

    def __init__(self, factory: _WordFactory, sounds):
        self.factory = factory
        self.sounds = sounds
        self.table: dict[str, str] = {}

    def word(self, base: str) -> str:
        key = base.lower()
        if key not in self.table:
            self.table[key] = self.factory.word(self.sounds)
        out = self.table[key]
        return out[0].upper() + out[1:] if base[0].isupper() else out

    def text(self, text: str) -> str:
        """Cipher every alphabetic word; keep `[X]`, `[Y]`, punctuation and spacing."""
        pieces = _SLOT.split(text)
        return "".join(
            piece if _SLOT.fullmatch(piece) else _WORD.sub(lambda m: self.word(m.group(0)), piece)
            for piece in pieces
        )


def _capitalise(word: str) -> str:
    return word[0].upper() + word[1:]


def _value(pattern: str, word: str) -> str:
    return pattern.replace("{W}", _capitalise(word)).replace("{w}", word)


def _stable_uuid(seed: int, *keys) -> str:
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode("utf-8")).digest()
    return str(uuidlib.UUID(bytes=digest[:16], version=4))


def _check_counts(subjects, questions, languages, relations, facts_per_relation, values_per_relation):
    for subject in subjects:
        if subject not in SUBJECTS:
            raise InputError(f"demo world: unknown subject {subject!r} (known: {', '.join(SUBJECTS)})")
    for split, n in questions.items():
        if split not in MMLU_SPLITS:
            raise InputError(f"demo world: unknown MMLU split {split!r} (known: {', '.join(MMLU_SPLITS)})")
        if not isinstance(n, int) or n < 0:
            raise InputError(f"demo world: question count for split {split!r} must be >= 0, got {n!r}")
    for relation in relations:
        if relation not in MLAMA_RELATIONS:
            raise InputError(f"demo world: unknown relation {relation!r} (known: {', '.join(MLAMA_RELATIONS)})")
    if len(languages) > len(_LANGUAGE_SOUNDS):
        raise InputError(f"demo world: at most {len(_LANGUAGE_SOUNDS)} languages, got {len(languages)}")
    for lang in languages:
        if not re.fullmatch(r"[a-z]{2,3}", lang):
            raise InputError(f"demo world: language code {lang!r} must be 2-3 lower-case letters")
    if len(set(languages)) != len(languages) or len(set(relations)) != len(relations):
        raise InputError("demo world: a language or relation is listed twice")
    if values_per_relation < len(LETTERS):
        raise InputError(f"demo world: values_per_relation must be >= {len(LETTERS)} so that distractors exist")
    if facts_per_relation < len(LETTERS):
        raise InputError(f"demo world: facts_per_relation must be >= {len(LETTERS)} so that distractors exist")


def _english_mlama_instructions() -> list[dict]:
    from ..datasets.instructions import MLAMA_TEMPLATES

    return [
        {"instruction": t.instruction, "question_line": t.question_line, "closing": t.closing,
         "response": t.response}
        for t in MLAMA_TEMPLATES["en"]
    ]


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _jsonl_text(records: Sequence[Mapping]) -> str:
    # json.dumps defaults (ASCII escapes, ", " and ": " separators), as in the mLAMA release.
    return "".join(json.dumps(r) + "\n" for r in records)


def generate_demo_world(
    *,
    seed: int = 0,
    subjects: Sequence[str] = DEFAULT_SUBJECTS,
    questions: Mapping[str, int] = DEFAULT_QUESTIONS,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    relations: Sequence[str] = DEFAULT_RELATIONS,
    facts_per_relation: int = 12,
    values_per_relation: int = 6,
) -> dict[str, str]:
    """The world's files as {relative path: text}, in a fixed order (see the module docstring).

    `questions` gives the number of questions per subject and MMLU split; the facts behind
    different splits are disjoint. `values_per_relation` is the size of each relation's value /
    object pool, from which the distractors come.
    """
    questions = dict(questions)
    _check_counts(subjects, questions, languages, relations, facts_per_relation, values_per_relation)
    rng = random.Random(seed)
    english = _english_mlama_instructions()
    reserved = set(LETTERS) | {"X", "Y"}
    for pattern in [t for s in SUBJECTS.values() for r in s.relations for t in (r.question, r.statement, r.value)]:
        reserved.update(_WORD.findall(pattern))
    for template in english:
        for text in template.values():
            reserved.update(_WORD.findall(text or ""))
    for rel in MLAMA_RELATIONS.values():
        reserved.update(_WORD.findall(rel.template))
    factory = _WordFactory(rng, reserved)

    files: dict[str, str] = {}
    statements: list[str] = []

    # Domains (MMLU layout).
    for subject in subjects:
        spec = SUBJECTS[subject]
        pools = [[_value(r.value, factory.word()) for _ in range(values_per_relation)] for r in spec.relations]
        rows_by_split: dict[str, list[list[str]]] = {}
        fact_index = 0
        for split in MMLU_SPLITS:
            rows = []
            for _ in range(questions.get(split, 0)):
                k = fact_index % len(spec.relations)
                relation, pool = spec.relations[k], pools[k]
                entity = factory.word()
                if spec.capitalised_entities:
                    entity = _capitalise(entity)
                gold = pool[rng.randrange(len(pool))]
                options = [gold, *rng.sample([v for v in pool if v != gold], len(LETTERS) - 1)]
                rng.shuffle(options)
                rows.append([relation.question.format(x=entity), *options, LETTERS[options.index(gold)]])
                statements.append(relation.statement.format(x=entity, y=gold))
                fact_index += 1
            rows_by_split[split] = rows
        for split in MMLU_SPLITS:
            files[f"mmlu/{split}/high_school_{subject}_{split}.csv"] = _csv_text(rows_by_split[split])

    # Facts in the base vocabulary (mLAMA layout), then one cipher per language.
    base_facts: dict[str, list[dict]] = {}
    qid = 900_000
    for relation in relations:
        spec = MLAMA_RELATIONS[relation]
        objects = []
        for _ in range(values_per_relation):
            qid += 1
            objects.append((f"Q{qid}", _capitalise(factory.word())))
        facts = []
        for i in range(facts_per_relation):
            qid += 1
            subject = " ".join(_capitalise(factory.word()) for _ in range(spec.subject_words))
            obj_uri, obj_label = objects[i % len(objects)] if i < len(objects) else objects[rng.randrange(len(objects))]
            facts.append({"sub_uri": f"Q{qid}", "obj_uri": obj_uri, "obj_label": obj_label, "sub_label": subject,
                          "lineid": i, "uuid": _stable_uuid(seed, "demo-mlama", relation, i)})
        base_facts[relation] = facts

    instructions: dict[str, list[dict]] = {}
    for lang, sounds in zip(languages, _LANGUAGE_SOUNDS):
        cipher = _Cipher(factory, sounds)
        instructions[lang] = [
            {key: (cipher.text(text) if text is not None else None) for key, text in template.items()}
            for template in english
        ]
        template_lines = []
        for relation in relations:
            template = cipher.text(MLAMA_RELATIONS[relation].template)
            template_lines.append({"relation": relation, "template": template})
            records = []
            for fact in base_facts[relation]:
                record = dict(fact, obj_label=cipher.text(fact["obj_label"]), sub_label=cipher.text(fact["sub_label"]))
                records.append(record)
                statements.append(template.replace("[X]", record["sub_label"]).replace("[Y]", record["obj_label"]))
            files[f"mlama/{lang}/{relation}.jsonl"] = _jsonl_text(records)
        files[f"mlama/{lang}/templates.jsonl"] = _jsonl_text(template_lines)
    files["mlama/instructions.json"] = json.dumps(instructions, ensure_ascii=False, indent=2) + "\n"
    files["statements.txt"] = "".join(s + "\n" for s in statements)
    return files


def write_demo_world(root: str | os.PathLike, *, seed: int = 0, **options) -> dict[str, Path]:
    """Write the synthetic world under `root` (see the module docstring); return {relative path: path}.

    Every file is generated in memory first, then written atomically, so an error leaves no
    partial file; other files under `root` are left alone. Keyword options are those of
    `generate_demo_world`.
    """
    root = Path(root)
    files = generate_demo_world(seed=seed, **options)
    written = {}
    for rel, text in files.items():
        path = root / rel
        with atomic_open(path) as fh:
            fh.write(text)
        written[rel] = path
    return written


def read_statements(root: str | os.PathLike) -> list[str]:
    """The fact sentences of a world written by `write_demo_world` (LM training text for the model)."""
    path = Path(root) / "statements.txt"
    if not path.is_file():
        raise InputError(f"demo world: no statements file {path}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
