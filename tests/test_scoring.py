import csv
import json

import pytest
import torch

from qrnca.errors import InputError
from qrnca.evaluation.scoring import (ACCURACY_COLUMNS, accuracy_table, encoding_study,
                                      left_padded_batch, score_prompts, write_scores)
from qrnca.io import write_csv
from qrnca.models.loading import PromptEncoding, letter_token_ids, load_model
from qrnca.models.tiny import save_tiny

CORPUS = [
    "Answer with the letter . Which one is it ? A . red B . blue C . green D . black Response :",
    "a much longer question about many things that makes this prompt longer than the others",
]


def _tiny(tmp_path_factory, arch):
    path = save_tiny(tmp_path_factory.mktemp("m") / arch, arch, corpus=CORPUS, layers=2, hidden=32)
    return load_model({"name": "tiny", "path": str(path)})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama")


def _queries():
    short = "Which one is it ? A . red B . blue C . green D . black Response :"
    long = "Answer with the letter . a much longer question about many things " + short
    return [
        {"id": "q1", "group": "g1", "prompts": [short, long, "Response :"], "answers": ["A", "B", "C"]},
        {"id": "q2", "group": "g2", "prompts": [long + " longer", short, short], "answers": ["D", "A", "B"]},
    ]


def test_left_padding_positions_count_real_tokens():
    ids, mask, positions = left_padded_batch([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions[1, -1].item() == 0 and positions[0].tolist() == [0, 1, 2]


# GPT-2 has absolute position embeddings: without position ids that count real tokens only, a
# left-padded row would be scored at shifted positions (RoPE models are shift-invariant).
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_scores_equal_unbatched(tmp_path_factory, arch):
    model, tok = _tiny(tmp_path_factory, arch)
    one = score_prompts(model, tok, _queries(), batch_size=1)
    many = score_prompts(model, tok, _queries(), batch_size=4)
    assert [(s["id"], s["prompt"], s["gold"]) for s in one] == [(s["id"], s["prompt"], s["gold"]) for s in many]
    for a, b in zip(one, many):
        assert a["predicted"] == b["predicted"]
        for letter in "ABCD":
            assert a["letter_probs"][letter] == pytest.approx(b["letter_probs"][letter], rel=1e-4, abs=1e-7)


def test_scores_are_full_softmax_probabilities_at_the_last_token(tiny):
    model, tok = tiny
    scores = score_prompts(model, tok, _queries())
    assert len(scores) == 6 and [s["prompt"] for s in scores] == [0, 1, 2, 0, 1, 2]
    ids = letter_token_ids(tok, "bare")
    with torch.no_grad():
        logits = model(PromptEncoding().ids(tok, _queries()[0]["prompts"][1])).logits[0, -1]
    expected = torch.softmax(logits, -1)
    for letter, token in ids.items():
        assert scores[1]["letter_probs"][letter] == pytest.approx(expected[token].item(), rel=1e-4)
    for s in scores:
        total = sum(s["letter_probs"].values())
        assert 0 < total <= 1 + 1e-6
        assert s["predicted"] == max("ABCD", key=lambda letter: s["letter_probs"][letter])


def test_accuracy_table_arithmetic():
    def probs(mass):
        return {"A": mass / 2, "B": mass / 2, "C": 0.0, "D": 0.0}

    scores = [
        {"group": "b", "gold": "A", "predicted": "A", "letter_probs": probs(0.2)},
        {"group": "b", "gold": "B", "predicted": "C", "letter_probs": probs(0.4)},
        {"group": "a", "gold": "D", "predicted": "D", "letter_probs": probs(0.9)},
        {"group": "b", "gold": "C", "predicted": "C", "letter_probs": probs(0.6)},
    ]
    table = accuracy_table(scores)
    assert list(table.columns) == ["group", "prompts", "correct", "accuracy", "letter_mass"]
    assert table["group"].tolist() == ["b", "a", "ALL"]  # first-seen order, then ALL
    assert table["prompts"].tolist() == [3, 1, 4]
    assert table["correct"].tolist() == [2, 1, 3]
    assert table["accuracy"].tolist() == pytest.approx([2 / 3, 1.0, 0.75])
    assert table["letter_mass"].tolist() == pytest.approx([0.4, 0.9, 0.525])


def test_writers_follow_the_format(tiny, tmp_path):
    model, tok = tiny
    scores, table = encoding_study(model, tok, _queries(), used=PromptEncoding())
    write_scores(tmp_path / "scores.jsonl", scores)
    write_csv(tmp_path / "accuracy.csv", table)
    lines = [json.loads(l) for l in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    assert {"id", "prompt", "gold", "letter_probs", "predicted"} <= set(lines[0])
    with open(tmp_path / "accuracy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(ACCURACY_COLUMNS)
    used = [r for r in rows if r["used"] == "True"]
    assert [r["group"] for r in used] == ["g1", "g2", "ALL"] and used[-1]["prompts"] == "6"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_encoding_study_scores_every_setting_and_names_what_is_unavailable(tiny):
    """Raw prompts: bare and leading-space letters from one pass, each equal to scoring that
    encoding alone; chat: the word-level tokenizer has no chat template, which the table says."""
    model, tok = tiny
    records, table = encoding_study(model, tok, _queries(),
                                    used=PromptEncoding(answer_token="leading_space"))
    alone = score_prompts(model, tok, _queries(), encoding=PromptEncoding("leading_space"))
    for got, want in zip(records, alone):
        assert got["predicted"] == want["predicted"]
        for letter in "ABCD":
            assert got["letter_probs"][letter] == pytest.approx(want["letter_probs"][letter], rel=1e-5)
    settings = table[["prompt_format", "answer_token"]].drop_duplicates()
    assert list(settings.itertuples(index=False, name=None)) == [("raw", "bare"), ("raw", "leading_space"), ("chat", "bare"),
                                     ("chat", "leading_space")]
    raw = table[(table["prompt_format"] == "raw") & (table["group"] == "ALL")]
    assert raw["prompts"].tolist() == [6, 6] and raw["used"].tolist() == [False, True]
    chat = table[table["prompt_format"] == "chat"]
    assert chat["prompts"].tolist() == [0, 0] and chat["note"].str.contains("chat template").all()
    with pytest.raises(InputError, match="chat template"):
        encoding_study(model, tok, _queries(), used=PromptEncoding(prompt_format="chat"))


def test_bad_queries_name_the_query(tiny):
    model, tok = tiny
    with pytest.raises(InputError, match="'q9'.*gold letter"):
        score_prompts(model, tok, [{"id": "q9", "group": "g", "prompts": ["x"], "answers": ["E"]}])
    with pytest.raises(InputError, match="missing field 'answers'"):
        score_prompts(model, tok, [{"id": "q9", "group": "g", "prompts": ["x"]}])
