"""Acceptance on the real raw inputs in ../shared/data (skipped when absent)."""

import collections
import json

import pytest

from qrnca.datasets import (
    MMLU_TEMPLATES,
    PAPER_LANGUAGES,
    PAPER_RELATIONS,
    PAPER_SUBJECTS,
    build_mlama,
    build_mmlu,
    convert_released,
    parse_options,
    render_prompt,
    write_dataset,
)
from qrnca.datasets.mmlu import read_mmlu_csv, subject_file

from demo_workflow import SHARED
pytestmark = [pytest.mark.shared_data, pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")]


@pytest.fixture(scope="module")
def domain():
    return build_mmlu(SHARED / "mmlu", PAPER_SUBJECTS)


@pytest.fixture(scope="module")
def language():
    return build_mlama(SHARED / "mlama", PAPER_LANGUAGES, PAPER_RELATIONS)


def test_domain_552(domain):
    assert len(domain) == 552
    assert collections.Counter(q["group"] for q in domain) == PAPER_SUBJECTS
    physics_rows = [q["source"]["row"] for q in domain if q["group"] == "physics"]
    assert 100 not in physics_rows and physics_rows[-1] == 101  # row 100 repeats an option


def test_language_600_same_facts(language):
    assert len(language) == 600
    assert collections.Counter(q["group"] for q in language) == {lang: 100 for lang in PAPER_LANGUAGES}
    cells = collections.Counter((q["group"], q["relation"]) for q in language)
    assert set(cells.values()) == {20} and len(cells) == 30
    facts = {lang: [q["fact"] for q in language if q["group"] == lang] for lang in PAPER_LANGUAGES}
    assert all(f == facts["en"] for f in facts.values()) and len(set(facts["en"])) == 100


def test_rebuilding_is_byte_identical(tmp_path, domain, language):
    for name, built, again in (
        ("domain", domain, lambda: build_mmlu(SHARED / "mmlu", PAPER_SUBJECTS)),
        ("language", language, lambda: build_mlama(SHARED / "mlama", PAPER_LANGUAGES, PAPER_RELATIONS)),
    ):
        write_dataset(tmp_path / f"{name}1.jsonl", built)
        write_dataset(tmp_path / f"{name}2.jsonl", again())
        assert (tmp_path / f"{name}1.jsonl").read_bytes() == (tmp_path / f"{name}2.jsonl").read_bytes()


@pytest.mark.parametrize("name, n", [("subject_qa.json", 552), ("language_qa.json", 600)])
def test_released_verbatim(tmp_path, name, n):
    data = json.loads((SHARED / "released" / name).read_text(encoding="utf-8"))
    queries = convert_released(SHARED / "released" / name)
    assert len(queries) == n == len(data)
    for q, (uuid, record) in zip(queries, data.items()):
        assert (
            q["fact"] == uuid and q["prompts"] == record["sentences"] and q["answers"] == record["obj_label"]
        )
        assert q["group"] == record["relation_name"] and q["relation"] == record.get("relation")
    write_dataset(tmp_path / "r.jsonl", queries)


def test_templates_reproduce_the_released_domain_prompts():
    """Rendering each released question's CSV row with the released option order gives the
    released prompt character for character (all 552 x 3), so the templates are the authors'."""
    rows = {}
    for subject in PAPER_SUBJECTS:
        for row in read_mmlu_csv(subject_file(SHARED / "mmlu", subject, "test")):
            rows.setdefault((subject, row.question), []).append(row)
    released = convert_released(SHARED / "released" / "subject_qa.json")
    head = MMLU_TEMPLATES[0].instruction + "\n" + MMLU_TEMPLATES[0].question_line + "\n"
    matched = 0
    for q in released:
        assert q["prompts"][0].startswith(head)
        question = q["prompts"][0][len(head) : q["prompts"][0].index("\n A. ")]
        match = [
            r for r in rows.get((q["group"], question), []) if sorted(r.options) == sorted(q["options"][0])
        ]
        assert len(match) == 1 and match[0].gold == q["gold"]
        for k, template in enumerate(MMLU_TEMPLATES):
            assert render_prompt(template, match[0].question, q["options"][k]) == q["prompts"][k]
            assert parse_options(q["prompts"][k]) == q["options"][k]
        matched += 1
    assert matched == 552


def test_limit_caps_questions_per_subject_and_facts_per_relation(domain):
    from qrnca.datasets import build_from_spec

    spec = {"name": "d", "source": "mmlu", "groups": dict(PAPER_SUBJECTS), "limit": 2}
    small = build_from_spec(spec, str(SHARED / "mmlu"))
    assert collections.Counter(q["group"] for q in small) == {s: 2 for s in PAPER_SUBJECTS}
    first = {s: [q["id"] for q in domain if q["group"] == s][:2] for s in PAPER_SUBJECTS}
    assert [q["id"] for q in small] == [i for s in PAPER_SUBJECTS for i in first[s]]
    spec = {"name": "l", "source": "mlama", "languages": list(PAPER_LANGUAGES),
            "relations": list(PAPER_RELATIONS), "facts_per_relation": 20, "limit": 1}
    language = build_from_spec(spec, str(SHARED / "mlama"))
    assert len(language) == len(PAPER_LANGUAGES) * len(PAPER_RELATIONS)
    facts = collections.defaultdict(set)
    for q in language:
        facts[q["group"]].add(q["fact"])
    assert len({frozenset(f) for f in facts.values()}) == 1  # the same facts in every language


def test_limit_caps_the_held_out_questions_too():
    from qrnca.datasets import build_from_spec

    spec = {"name": "d", "source": "mmlu", "groups": dict(PAPER_SUBJECTS), "limit": 12}
    heldout = build_from_spec(spec, str(SHARED / "mmlu"), split="val")
    counts = collections.Counter(q["group"] for q in heldout)
    assert counts["biology"] == 12 and counts["computer_science"] == 9  # only 9 val rows exist
    everything = build_from_spec({**spec, "limit": None}, str(SHARED / "mmlu"), split="val")
    assert [q["id"] for q in heldout] == [
        q["id"] for q in everything
        if [x["id"] for x in everything if x["group"] == q["group"]].index(q["id"]) < 12]
