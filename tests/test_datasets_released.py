"""The authors' released JSON files converted to queries."""

import json
from pathlib import Path

import pytest

from qrnca.datasets import convert_released
from qrnca.errors import DatasetError

RAW = Path(__file__).parent / "fixtures" / "raw"


def test_subject_records_verbatim_in_key_order():
    path = RAW / "released" / "subject_qa.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    queries = convert_released(path)
    assert [q["fact"] for q in queries] == list(data)
    q = queries[0]
    assert q["id"] == "released-0a1b2c3d-0000-11ef-0000-000000000001"
    assert q["prompts"] == data[q["fact"]]["sentences"] and q["answers"] == ["C", "A", "D"]
    assert q["gold"] == "Mitochondrion" and q["group"] == "biology" and q["relation"] is None
    assert q["options"][1] == ["Mitochondrion", "Nucleus", "Ribosome", "Golgi apparatus"]
    assert q["source"] == {"kind": "released", "file": "subject_qa.json", "row": 1}


def test_repeated_option_kept_when_gold_is_unambiguous(caplog):
    queries = convert_released(RAW / "released" / "subject_qa.json")
    assert queries[1]["gold"] == "0.32 N" and queries[1]["options"][0].count("0.16 N") == 2
    assert "repeated option" in caplog.text


def test_language_records():
    queries = convert_released(RAW / "released" / "language_qa.json")
    assert [(q["group"], q["relation"], q["gold"]) for q in queries] == [
        ("en", "P19", "Warsaw"),
        ("fr", "P19", "Varsovie"),
    ]
    assert queries[1]["answers"] == ["B", "A", "C"]


def test_ori_label_must_match_gold():
    with pytest.raises(DatasetError) as err:
        convert_released(RAW / "bad" / "released_ori" / "language_qa.json")
    assert "language_qa.json, row 2" in str(err.value) and "ori_label 'Paris'" in str(err.value)


def test_gold_text_must_agree_across_prompts():
    with pytest.raises(
        DatasetError,
        match=r"subject_qa\.json, row 1: record '0a1b2c3d-.*001': prompt 2: option B is 'Nucleus'",
    ):
        convert_released(RAW / "bad" / "released_gold" / "subject_qa.json")


def test_structural_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(
        json.dumps({"k": {"sentences": ["a", "b", "c"], "obj_label": ["A", "B", "C"], "relation_name": "x"}})
    )
    with pytest.raises(DatasetError, match="x.json, row 1: record 'k': prompt 1 has no"):
        convert_released(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="keyed by uuid"):
        convert_released(bad)
    with pytest.raises(DatasetError, match="file not found"):
        convert_released(tmp_path / "missing.json")
