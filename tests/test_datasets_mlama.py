"""mLAMA language dataset: shared facts across languages, templates, distractors, instructions."""

import json
from pathlib import Path

import pytest

from qrnca.datasets import (
    LETTERS,
    MLAMA_TEMPLATES,
    PAPER_LANGUAGES,
    build_mlama,
    mlama_templates,
    parse_options,
)
from qrnca.errors import DatasetError, InputError

RAW = Path(__file__).parent / "fixtures" / "raw"
MLAMA = RAW / "mlama"
QQ = {
    "qq": [
        {
            "instruction": "Respondu per litero.",
            "question_line": "Jen la demando:",
            "closing": "Kiu estas [Y]?",
            "response": "Respondo:",
        },
        {
            "instruction": "Elektu unu literon.",
            "question_line": "La demando:",
            "closing": "Kiu estas [Y]?",
            "response": "Respondo:",
        },
        {
            "instruction": "Preparu vin.",
            "question_line": "Demando:",
            "closing": "Kiu estas [Y]?",
            "response": "Via respondo:",
        },
    ]
}


def test_same_facts_in_every_language_in_lineid_order():
    queries = build_mlama(MLAMA, ["en", "fr", "qq"], ["P19", "P17"], facts_per_relation=3, instructions=QQ)
    assert len(queries) == 3 * 2 * 3
    assert [q["group"] for q in queries[:6]] == ["en"] * 6
    assert [q["relation"] for q in queries[:6]] == ["P19"] * 3 + ["P17"] * 3
    per_lang = {lang: [q["fact"] for q in queries if q["group"] == lang] for lang in ("en", "fr", "qq")}
    assert per_lang["en"] == per_lang["fr"] == per_lang["qq"]
    p19 = per_lang["en"][:3]
    assert "u-06" not in p19  # missing in French, never chosen
    assert p19 == sorted(p19)  # lineid order (fixture uuids follow lineid), whatever the file order


def test_first_selection_and_sample_is_seeded():
    first = build_mlama(MLAMA, ["en", "fr"], ["P19"], facts_per_relation=3, fact_selection="first")
    assert [q["fact"] for q in first[:3]] == ["u-01", "u-02", "u-03"]
    facts = {
        s: tuple(q["fact"] for q in build_mlama(MLAMA, ["en"], ["P19"], facts_per_relation=3, seed=s))
        for s in range(8)
    }
    assert len(set(facts.values())) > 1
    assert facts[0] == tuple(
        q["fact"] for q in build_mlama(MLAMA, ["en"], ["P19"], facts_per_relation=3, seed=0)
    )


def test_question_options_and_source():
    queries = build_mlama(MLAMA, ["fr"], ["P19"], facts_per_relation=6, fact_selection="first", seed=5)
    q = next(q for q in queries if q["fact"] == "u-02")
    assert q["id"] == "mlama-fr-P19-u-02" and q["gold"] == "Varsovie"
    assert q["source"] == {"kind": "mlama", "file": "fr/P19.jsonl", "row": 2}
    french_objects = {"Londres", "Varsovie", "Coyoacán", "Smiljan", "Edo", "Tanger"}
    for k, (prompt, letter, options) in enumerate(zip(q["prompts"], q["answers"], q["options"])):
        t = MLAMA_TEMPLATES["fr"][k]
        assert f"\n{t.question_line}\nMarie Curie est né en [Y].\n A. " in prompt
        assert prompt.endswith(f"\n\n{t.closing}\n{t.response}")
        assert parse_options(prompt) == options
        assert len(set(options)) == 4 and set(options) <= french_objects
        assert options[LETTERS.index(letter)] == "Varsovie"
    # distractors are re-sampled for each template over the queries
    assert any(len({frozenset(o) for o in q["options"]}) > 1 for q in queries)


def test_builtin_translations_cover_the_paper_languages():
    for lang in PAPER_LANGUAGES:
        templates = mlama_templates(lang)
        assert len(templates) == 3 and all("[Y]" in t.closing for t in templates)
        assert len({t.instruction for t in templates}) == 3


def test_unknown_language_needs_instructions():
    with pytest.raises(InputError, match=r"language 'qq'.*instructions"):
        build_mlama(MLAMA, ["en", "qq"], ["P19"], facts_per_relation=2)
    bad = {"qq": QQ["qq"][:2]}
    with pytest.raises(InputError, match="list of 3 templates"):
        build_mlama(MLAMA, ["qq"], ["P19"], facts_per_relation=2, instructions=bad)
    bad = {"qq": [dict(QQ["qq"][0], response=""), *QQ["qq"][1:]]}
    with pytest.raises(InputError, match="template 1.*'response'"):
        build_mlama(MLAMA, ["qq"], ["P19"], facts_per_relation=2, instructions=bad)


def test_unknown_relation_and_missing_language_folder():
    with pytest.raises(InputError, match=r"unknown relation 'P999' for language 'en'.*known: P17, P19, P20"):
        build_mlama(MLAMA, ["en"], ["P999"])
    with pytest.raises(InputError, match=r"unknown relation 'P20' for language 'en': no file .*P20\.jsonl"):
        build_mlama(MLAMA, ["en"], ["P20"], facts_per_relation=1)
    with pytest.raises(DatasetError, match="no data for language 'de'"):
        build_mlama(MLAMA, ["de"], ["P19"], instructions={"de": QQ["qq"]})


def test_fewer_facts_than_requested_names_relation_and_languages():
    with pytest.raises(InputError, match=r"relation P19: 7 facts requested but only 6 .* en, fr"):
        build_mlama(MLAMA, ["en", "fr"], ["P19"], facts_per_relation=7)


def test_template_without_placeholder_names_file_and_row():
    with pytest.raises(DatasetError) as err:
        build_mlama(RAW / "bad" / "mlama_template", ["en"], ["P19"], facts_per_relation=1)
    assert "templates.jsonl, row 2" in str(err.value) and "lacks [Y]" in str(err.value)


def test_malformed_fact_line_names_file_and_row():
    with pytest.raises(DatasetError, match=r"P17\.jsonl, row 3: missing keys \['obj_label'\]"):
        build_mlama(RAW / "bad" / "mlama_keys", ["en"], ["P17"], facts_per_relation=1)


def test_too_few_distractors():
    with pytest.raises(DatasetError, match="only 2 objects other than 'France'"):
        build_mlama(
            RAW / "bad" / "mlama_few_objects", ["en"], ["P17"], facts_per_relation=1, fact_selection="first"
        )


def test_bad_parameters():
    with pytest.raises(InputError, match="fact_selection"):
        build_mlama(MLAMA, ["en"], ["P19"], fact_selection="random")
    with pytest.raises(InputError, match="listed twice"):
        build_mlama(MLAMA, ["en", "en"], ["P19"])
    with pytest.raises(InputError, match="invalid mLAMA language"):
        build_mlama(MLAMA, ["../en"], ["P19"])


def test_fixture_is_real_mlama_encoding():
    line = (MLAMA / "fr" / "templates.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert "\\u00e9" in line and json.loads(line)["template"] == "[X] est né en [Y]."
