import csv
import json
import re

import pytest

from qrnca.datasets.from_config import load_instructions
from qrnca.datasets.mlama import build_mlama
from qrnca.datasets.mmlu import build_mmlu
from qrnca.demo.world import (DEFAULT_LANGUAGES, DEFAULT_RELATIONS, DEFAULT_SUBJECTS,
                              generate_demo_world, read_statements, write_demo_world)
from qrnca.errors import InputError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_demo_world(root, seed=0)
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(world, tmp_path):
    write_demo_world(tmp_path / "again", seed=0)
    assert _tree(tmp_path / "again") == _tree(world)
    other = generate_demo_world(seed=1)
    assert other.keys() == {k for k in _tree(world)}
    assert other["mmlu/test/high_school_biology_test.csv"] != (world / "mmlu/test/high_school_biology_test.csv").read_text()


def test_layout_is_the_real_raw_layout(world):
    files = set(_tree(world))
    for subject in DEFAULT_SUBJECTS:
        for split in ("test", "val", "dev"):
            assert f"mmlu/{split}/high_school_{subject}_{split}.csv" in files
    for lang in DEFAULT_LANGUAGES:
        assert f"mlama/{lang}/templates.jsonl" in files
        for rel in DEFAULT_RELATIONS:
            assert f"mlama/{lang}/{rel}.jsonl" in files
    assert {"mlama/instructions.json", "statements.txt"} <= files


def _rows(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_mmlu_rows_are_well_formed_and_splits_disjoint(world):
    letters_seen = set()
    for subject in DEFAULT_SUBJECTS:
        entities = {}
        for split, n in (("test", 24), ("val", 8), ("dev", 5)):
            rows = _rows(world / "mmlu" / split / f"high_school_{subject}_{split}.csv")
            assert len(rows) == n
            for question, *options, answer in rows:
                assert answer in "ABCD" and len(set(options)) == 4
                letters_seen.add(answer)
                entities.setdefault(split, set()).add(question)
        assert not entities["test"] & entities["val"] and not entities["test"] & entities["dev"]
    assert letters_seen == set("ABCD")


def test_every_fact_is_stated_including_held_out_ones(world):
    statements = read_statements(world)
    text = "\n".join(statements)
    for question, *options, answer in _rows(world / "mmlu/val/high_school_biology_val.csv"):
        gold = options["ABCD".index(answer)]
        entity = re.search(r"the (\w+) (have|produce)", question).group(1)
        assert any(entity in s and gold in s for s in statements), (entity, gold)
    for lang in DEFAULT_LANGUAGES:
        first = json.loads((world / "mlama" / lang / "P19.jsonl").read_text().splitlines()[0])
        assert first["sub_label"] in text and first["obj_label"] in text


def test_mlama_facts_share_uuids_but_not_words_across_languages(world):
    records = {lang: [json.loads(l) for l in (world / "mlama" / lang / "P19.jsonl").read_text().splitlines()]
               for lang in DEFAULT_LANGUAGES}
    xa, xb = records["xa"], records["xb"]
    assert list(xa[0]) == ["sub_uri", "obj_uri", "obj_label", "sub_label", "lineid", "uuid"]
    assert len(xa) == 12
    assert [r["uuid"] for r in xa] == [r["uuid"] for r in xb]
    assert [r["obj_uri"] for r in xa] == [r["obj_uri"] for r in xb]
    words = {lang: {w for r in recs for w in (r["sub_label"] + " " + r["obj_label"]).split()}
             for lang, recs in records.items()}
    assert not words["xa"] & words["xb"]
    # The same object has one spelling per language; the object pool leaves room for distractors.
    assert len({(r["obj_uri"], r["obj_label"]) for r in xa}) == len({r["obj_uri"] for r in xa}) >= 4
    template = json.loads((world / "mlama/xa/templates.jsonl").read_text().splitlines()[0])
    assert template["relation"] == "P19" and "[X]" in template["template"] and "[Y]" in template["template"]


def test_builders_read_the_world(world):
    domain = build_mmlu(world / "mmlu", {s: 24 for s in DEFAULT_SUBJECTS})
    held_out = build_mmlu(world / "mmlu", {s: 8 for s in DEFAULT_SUBJECTS}, split="val")
    instructions = load_instructions(world / "mlama" / "instructions.json")
    assert set(instructions) == set(DEFAULT_LANGUAGES) and all(len(v) == 3 for v in instructions.values())
    language = build_mlama(world / "mlama", list(DEFAULT_LANGUAGES), list(DEFAULT_RELATIONS),
                           facts_per_relation=12, instructions=instructions)
    assert len(domain) == 72 and len(held_out) == 24
    assert len(language) == len(DEFAULT_LANGUAGES) * len(DEFAULT_RELATIONS) * 12
    assert {q["group"] for q in language} == set(DEFAULT_LANGUAGES)
    prompt = language[0]["prompts"][0]
    assert "[Y]" in prompt and " A. " in prompt
    # Instructions are in the made-up language, not English.
    assert "multiple-choice" not in prompt and "Response" not in prompt


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(InputError, match="unknown subject"):
        write_demo_world(tmp_path, subjects=("astrology",))
    with pytest.raises(InputError, match="unknown relation"):
        write_demo_world(tmp_path, relations=("P999",))
    with pytest.raises(InputError, match="values_per_relation"):
        write_demo_world(tmp_path, values_per_relation=3)
    assert not any(tmp_path.iterdir())  # nothing written on error
