"""A user's own JSON-lines dataset (`source: jsonl`) and the `limit` size knob."""

import json

import pytest

from qrnca.datasets import build_from_spec, validate_queries
from qrnca.datasets.from_config import first_per_group
from qrnca.errors import DatasetError

OPTIONS = ["Mars", "Jupiter", "Venus", "Saturn"]


def _line(qid, group="astronomy", **extra):
    prompts = [f"Which planet is largest? {t}" for t in ("Answer:", "Response:", "Letter:")]
    return {"id": qid, "group": group, "prompts": prompts, "answers": ["B", "B", "B"],
            "options": [OPTIONS] * 3, "gold": "Jupiter", **extra}


def _write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_own_dataset_is_read_completed_and_valid(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [_line("a1"), _line("a2", relation="size"),
                                             _line("g1", group="geology")])
    queries = build_from_spec({"name": "mine", "source": "jsonl"}, str(path))
    validate_queries(queries)
    assert [q["id"] for q in queries] == ["a1", "a2", "g1"]
    assert queries[0]["fact"] == "a1" and queries[0]["relation"] is None
    assert queries[0]["source"] == {"kind": "jsonl", "file": str(path), "row": 1}
    assert queries[1]["relation"] == "size"
    limited = build_from_spec({"name": "mine", "source": "jsonl", "limit": 1}, str(path))
    assert [q["id"] for q in limited] == ["a1", "g1"]


@pytest.mark.parametrize("bad,message", [
    ({"gold": "Pluto"}, "gold 'Pluto' must occur exactly once"),
    ({"answers": ["B", "B"]}, "'answers' must be 3 letters"),
    ({"colour": "red"}, "unexpected fields \\['colour'\\]"),
])
def test_a_bad_line_is_named_with_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "mine.jsonl", [_line("a1"), {**_line("a2"), **bad}])
    with pytest.raises(DatasetError, match=f"mine.jsonl, row 2: .*{message}"):
        build_from_spec({"name": "mine", "source": "jsonl"}, str(path))


def test_missing_fields_duplicates_and_empty_files_are_named(tmp_path):
    line = _line("a1")
    del line["options"]
    with pytest.raises(DatasetError, match=r"row 1: missing fields \['options'\]"):
        build_from_spec({"name": "m", "source": "jsonl"}, str(_write(tmp_path / "a.jsonl", [line])))
    with pytest.raises(DatasetError, match="row 2: duplicate id 'a1' \\(first on line 1\\)"):
        build_from_spec({"name": "m", "source": "jsonl"},
                        str(_write(tmp_path / "b.jsonl", [_line("a1"), _line("a1")])))
    with pytest.raises(DatasetError, match="no queries"):
        build_from_spec({"name": "m", "source": "jsonl"}, str(_write(tmp_path / "c.jsonl", [])))
    with pytest.raises(DatasetError, match="file not found"):
        build_from_spec({"name": "m", "source": "jsonl"}, str(tmp_path / "absent.jsonl"))


def test_first_per_group_keeps_file_order():
    queries = [{"id": str(i), "group": g} for i, g in enumerate("abab" "ca")]
    assert [q["id"] for q in first_per_group(queries, 2)] == ["0", "1", "2", "3", "4"]
    assert first_per_group(queries, None) is queries
