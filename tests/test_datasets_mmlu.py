"""MMLU domain dataset: CSV reading and validation, first_n selection, per-template shuffles."""

from pathlib import Path

import pytest

from qrnca.datasets import MMLU_TEMPLATES, LETTERS, build_mmlu, parse_options
from qrnca.datasets.mmlu import available_subjects, prompt_chars, read_mmlu_csv
from qrnca.errors import DatasetError, InputError

RAW = Path(__file__).parent / "fixtures" / "raw"
MMLU = RAW / "mmlu"
BIO = MMLU / "test" / "high_school_biology_test.csv"


def test_fixture_keeps_the_raw_quirks():
    data = BIO.read_bytes()
    assert b"\r\n" in data and b"\n" in data.replace(b"\r\n", b"")  # mixed line endings
    assert not data.endswith(b"\n")  # no final newline


def test_read_csv_records_not_lines():
    rows = read_mmlu_csv(BIO, name="test/x.csv")
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[1].question == "Which molecule carries amino acids to the ribosome, during translation?"
    assert rows[2].question == "Read the passage:\nCells divide by mitosis.\nWhat does mitosis produce?"
    assert rows[4].options[0] == 'Glucose "sugar"'
    assert rows[6].answer == "C" and rows[6].gold == "Cellular respiration"  # last record, no newline
    assert rows[0].file == "test/x.csv"


@pytest.mark.parametrize(
    "case, row, words",
    [
        ("mmlu_fields", 3, "expected 6 fields"),
        ("mmlu_answer", 2, "answer must be one of"),
        ("mmlu_empty", 2, "empty option B"),
        ("mmlu_quote", 2, "malformed CSV"),
    ],
)
def test_bad_rows_name_file_and_row(case, row, words):
    root = RAW / "bad" / case
    with pytest.raises(DatasetError) as err:
        build_mmlu(root, {"biology": 1})
    message = str(err.value)
    assert "high_school_biology_test.csv" in message and f"row {row}" in message and words in message
    assert err.value.row == row and isinstance(err.value, InputError)


def test_duplicate_options_error_mode_names_row():
    with pytest.raises(DatasetError, match=r"high_school_biology_test\.csv, row 4: options are not distinct"):
        build_mmlu(MMLU, {"biology": 1}, duplicate_options="error")


def test_duplicate_options_skipped_by_default():
    queries = build_mmlu(MMLU, {"biology": 6})
    assert [q["source"]["row"] for q in queries] == [1, 2, 3, 5, 6, 7]


def test_unknown_subject_lists_known_ones():
    with pytest.raises(InputError, match=r"unknown MMLU subject 'astrology'.*known: biology, physics"):
        build_mmlu(MMLU, {"astrology": 1})
    assert available_subjects(MMLU, "test") == ["biology", "physics"]


def test_too_few_rows_names_subject_file_and_count():
    with pytest.raises(DatasetError) as err:
        build_mmlu(MMLU, {"physics": 4})
    assert "high_school_physics_test.csv" in str(err.value)
    assert "'physics': 4 questions requested but only 3 of 3 rows" in str(err.value)


def test_first_n_in_file_order_with_length_cap():
    rows = read_mmlu_csv(BIO)
    cap = prompt_chars(rows[4]) - 1  # row 5 is the long one
    assert all(prompt_chars(r) <= cap for r in rows if r.row != 5)
    queries = build_mmlu(MMLU, {"biology": 4}, max_prompt_chars=cap)
    assert [q["source"]["row"] for q in queries] == [1, 2, 3, 6]
    assert all(len(p) <= cap for q in queries for p in q["prompts"])
    with pytest.raises(DatasetError, match="characters"):
        build_mmlu(MMLU, {"biology": 6}, max_prompt_chars=cap)


def test_query_fields_and_rendering():
    queries = build_mmlu(MMLU, {"physics": 3, "biology": 2}, seed=3)
    assert [q["group"] for q in queries] == ["physics"] * 3 + ["biology"] * 2
    q = queries[3]
    assert q["id"] == "mmlu-biology-test-0001" and q["relation"] is None
    assert q["fact"] == "test/high_school_biology_test.csv:1"
    assert q["source"] == {"kind": "mmlu", "file": "test/high_school_biology_test.csv", "row": 1}
    assert q["gold"] == "Mitochondrion"
    for k, (prompt, letter, options) in enumerate(zip(q["prompts"], q["answers"], q["options"])):
        template = MMLU_TEMPLATES[k]
        assert prompt.startswith(
            template.instruction + "\n" + template.question_line + "\nWhich organelle makes ATP?\n A. "
        )
        assert prompt.endswith("\n\n" + template.response)
        assert parse_options(prompt) == options
        assert sorted(options) == sorted(["Nucleus", "Mitochondrion", "Ribosome", "Golgi apparatus"])
        assert options[LETTERS.index(letter)] == "Mitochondrion"


def test_shuffles_are_seeded_per_query_and_template():
    a = build_mmlu(MMLU, {"biology": 6}, seed=0)
    b = build_mmlu(MMLU, {"physics": 3, "biology": 6}, seed=0)[3:]
    assert a == b  # adding a subject changes nothing else
    c = build_mmlu(MMLU, {"biology": 6}, seed=1)
    assert [q["options"] for q in a] != [q["options"] for q in c]
    # the three templates are shuffled independently: some query has differing orders
    assert any(len({tuple(o) for o in q["options"]}) > 1 for q in a)


def test_split_and_bad_split():
    val = build_mmlu(MMLU, {"biology": 2}, split="val")
    assert [q["id"] for q in val] == ["mmlu-biology-val-0001", "mmlu-biology-val-0002"]
    with pytest.raises(InputError, match="unknown MMLU split 'train'"):
        build_mmlu(MMLU, {"biology": 1}, split="train")
    with pytest.raises(InputError, match="count must be a positive integer"):
        build_mmlu(MMLU, {"biology": 0})


def test_heldout_split_takes_every_eligible_row_via_config(tmp_path):
    from qrnca.datasets import build_from_spec

    root = MMLU
    spec = {"name": "d", "source": "mmlu", "groups": {"biology": 1}, "split": "test"}
    test_queries = build_from_spec(spec, str(root))
    assert len(test_queries) == 1
    subject = "biology"
    n_rows = len(read_mmlu_csv(root / "val" / f"high_school_{subject}_val.csv"))
    heldout = build_from_spec(spec, str(root), split="val")
    assert 1 <= len(heldout) <= n_rows
    assert all(q["id"].startswith("mmlu-biology-val-") for q in heldout)
