"""The dataset contract: validation, atomic writing, rendering and seeded randomness."""

import copy
from pathlib import Path

import pytest

from qrnca.datasets import (
    LETTERS,
    MMLU_TEMPLATES,
    build_mmlu,
    derive_rng,
    parse_options,
    render_prompt,
    validate_queries,
    write_dataset,
)
from qrnca.datasets.render import PromptTemplate
from qrnca.errors import DatasetError, InputError
from qrnca.io import read_jsonl

MMLU = Path(__file__).parent / "fixtures" / "raw" / "mmlu"


@pytest.fixture(scope="module")
def queries():
    return build_mmlu(MMLU, {"biology": 3, "physics": 2})


def test_write_dataset_roundtrip_and_bytes(tmp_path, queries):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert write_dataset(a, queries) == 5
    write_dataset(b, build_mmlu(MMLU, {"biology": 3, "physics": 2}))
    assert a.read_bytes() == b.read_bytes()
    assert read_jsonl(a) == queries
    assert list(read_jsonl(a)[0]) == [
        "id",
        "group",
        "relation",
        "fact",
        "prompts",
        "answers",
        "options",
        "gold",
        "source",
    ]


def _broken(queries, mutate):
    broken = copy.deepcopy(queries)
    mutate(broken)
    return broken


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda qs: qs[1]["prompts"].pop(), "'prompts' must be 3"),
        (lambda qs: qs[1]["answers"].__setitem__(0, "E"), "'answers' must be 3 letters"),
        (lambda qs: qs[1]["options"][2].__setitem__(0, qs[1]["options"][2][1]), "prompt 3"),
        (lambda qs: qs[1].__setitem__("gold", "something else"), "must occur exactly once"),
        (lambda qs: qs[1].__setitem__("id", qs[0]["id"]), "duplicate id"),
        (lambda qs: qs[1].pop("source"), "missing fields ['source']"),
        (lambda qs: qs[1].__setitem__("extra", 1), "unexpected fields"),
    ],
)
def test_validator_rejects_and_nothing_is_written(tmp_path, queries, mutate, words):
    bad = _broken(queries, mutate)
    with pytest.raises(DatasetError, match="query 2") as err:
        validate_queries(bad)
    assert words in str(err.value)
    target = tmp_path / "out" / "d.jsonl"
    with pytest.raises(DatasetError):
        write_dataset(target, bad)
    assert not target.exists() and list(target.parent.glob("*")) == []


def test_gold_letter_must_point_at_gold(queries):
    def swap(qs):
        q = qs[0]
        i = LETTERS.index(q["answers"][0])
        q["answers"][0] = LETTERS[(i + 1) % 4]

    with pytest.raises(DatasetError, match="not the gold"):
        validate_queries(_broken(queries, swap))


def test_existing_file_untouched_on_error(tmp_path, queries):
    target = tmp_path / "d.jsonl"
    target.write_text("old\n")
    with pytest.raises(DatasetError):
        write_dataset(target, _broken(queries, lambda qs: qs[0]["answers"].pop()))
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_render_and_parse_roundtrip():
    t = PromptTemplate("Instr.", "Q line:", "Response:", "Closing [Y]?")
    prompt = render_prompt(t, "Why?", ["a", "two\nlines", "c", "d"])
    assert prompt == "Instr.\nQ line:\nWhy?\n A. a\n B. two\nlines\n C. c\n D. d\n\nClosing [Y]?\nResponse:"
    assert parse_options(prompt) == ["a", "two\nlines", "c", "d"]
    assert parse_options("no options here") is None
    with pytest.raises(InputError):
        render_prompt(MMLU_TEMPLATES[0], "Q", ["a", "b", "c"])


def test_derive_rng_depends_on_every_key():
    draw = lambda *keys: derive_rng(*keys).random()
    assert draw(0, "x", 1) == draw(0, "x", 1)
    assert len({draw(0, "x", 1), draw(1, "x", 1), draw(0, "y", 1), draw(0, "x", 2)}) == 4
