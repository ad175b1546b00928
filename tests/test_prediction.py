"""Table 7 (neuron-based prediction, a reconstruction): a planted neuron that fires on one letter
token decides the neuron-based answer; the shared-prefix continuation equals a full forward;
Table 7 arithmetic on hand-made records."""

import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from qrnca.errors import InputError
from qrnca.evaluation import prediction as pr
from qrnca.evaluation.scoring import score_prompts
from qrnca.io import write_csv
from qrnca.models.layouts import record_last_position
from qrnca.models.loading import PromptEncoding
from qrnca.models.tiny import build_model, train_word_tokenizer
from qrnca.outputs import prediction_table as t7

TEMPLATE = "Reply with the letter only . Question : {q} ? A . red B . blue C . green D . gold Response :"
QUESTIONS = ["what is grass", "what is sky", "what is sun"]
CORPUS = [TEMPLATE.format(q=q) for q in QUESTIONS] + ["Answer : ResponseA"]
PLANTED = (1, 7)


def _query(qid, group, question, answers=("C", "A", "B")):
    prompt = TEMPLATE.format(q=question)
    return {"id": qid, "group": group, "prompts": [prompt, prompt + " Now", prompt],
            "answers": list(answers)}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    tokenizer = train_word_tokenizer(CORPUS + ["Now"])
    model = build_model("llama", vocab_size=len(tokenizer), layers=2, hidden=32, intermediate=16,
                        heads=2, seed=0)
    u = torch.zeros(32)
    u[0] = 1.0
    c_id = tokenizer.convert_tokens_to_ids("C")
    layer, index = PLANTED
    with torch.no_grad():
        # "C" dominates the residual stream at its position and the planted neuron reads that
        # direction through both its gate and its up projection: a large positive activation.
        model.get_input_embeddings().weight[c_id] = 100.0 * u
        mlp = model.model.layers[layer].mlp
        mlp.up_proj.weight[index] = 10.0 * u
        mlp.gate_proj.weight[index] = 10.0 * u
    return model, tokenizer


def _direct(model, tokenizer, text):
    with torch.no_grad(), record_last_position(model) as rec:
        model(PromptEncoding().ids(tokenizer, text))
    return rec


def test_planted_neuron_picks_its_letter_and_scores_equal_a_full_forward(tiny):
    model, tokenizer = tiny
    queries = [_query("q1", "bio", QUESTIONS[0]), _query("q2", "bio", QUESTIONS[1])]
    records = pr.neuron_based_predictions(model, tokenizer, queries, {"bio": {PLANTED, (0, 3)}})
    assert len(records) == 6
    assert [(r["id"], r["prompt"]) for r in records] == [("q1", 0), ("q1", 1), ("q1", 2),
                                                         ("q2", 0), ("q2", 1), ("q2", 2)]
    for r in records:
        assert r["neuron_predicted"] == "C"
        assert r["continuation"] == "shared_prefix" and r["n_neurons"] == 2
        prompt = queries[0 if r["id"] == "q1" else 1]["prompts"][r["prompt"]]
        for letter in "ABCD":
            rec = _direct(model, tokenizer, prompt + " " + letter)
            want = float(rec[1][0, 7]) + float(rec[0][0, 3])
            assert r["neuron_scores"][letter] == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert records[0]["neuron_scores"]["C"] > 100 * abs(records[0]["neuron_scores"]["A"])
    # Prompt-based answers equal the scoring module's (full softmax at the last prompt token).
    scores = score_prompts(model, tokenizer, queries)
    for r, s in zip(records, scores):
        assert r["prompt_predicted"] == s["predicted"]
        for letter in "ABCD":
            assert r["letter_probs"][letter] == pytest.approx(s["letter_probs"][letter], rel=1e-4)


class Joined(PromptEncoding):
    """A raw encoding whose reply joins the letter with another text (a test of the paths)."""

    def __init__(self, joiner):
        super().__init__()
        object.__setattr__(self, "joiner", joiner)

    def reply(self, letter):
        return self.joiner + letter


def test_multi_token_continuation_and_full_fallback_match_a_full_forward(tiny):
    model, tokenizer = tiny
    query = _query("q3", "bio", QUESTIONS[2])
    query["prompts"] = [p if p.endswith("Now") else p + " Now" for p in query["prompts"]]
    neurons = {"bio": {PLANTED, (1, 2), (0, 9)}}
    # " Answer : X": a 3-token suffix, still on the shared prompt cache.
    multi = pr.neuron_based_predictions(model, tokenizer, [query], neurons,
                                        encoding=Joined(" Answer : "))
    # "" joins the last word and the letter into one word ("NowA", unknown): the prompt's
    # tokens are not a prefix any more, so the four full texts are run as a padded batch.
    full = pr.neuron_based_predictions(model, tokenizer, [query], neurons, encoding=Joined(""))
    assert {r["continuation"] for r in multi} == {"shared_prefix"}
    assert {r["continuation"] for r in full} == {"full"}
    for records, joiner in ((multi, " Answer : "), (full, "")):
        for r in records:
            prompt = query["prompts"][r["prompt"]]
            for letter in "ABCD":
                rec = _direct(model, tokenizer, prompt + joiner + letter)
                want = float(rec[1][0, 7]) + float(rec[1][0, 2]) + float(rec[0][0, 9])
                assert r["neuron_scores"][letter] == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_group_without_neurons_has_no_neuron_prediction_and_unknown_group_fails(tiny):
    model, tokenizer = tiny
    query = _query("q1", "bio", QUESTIONS[0])
    records = pr.neuron_based_predictions(model, tokenizer, [query], {"bio": set()})
    assert all(r["neuron_predicted"] is None and r["n_neurons"] == 0 for r in records)
    with pytest.raises(InputError, match="'geo'"):
        pr.neuron_based_predictions(model, tokenizer, [_query("q9", "geo", "x")], {"bio": set()})
    with pytest.raises(InputError, match="outside the model's neuron grid"):
        pr.neuron_based_predictions(model, tokenizer, [query], {"bio": {(2, 0)}})


def test_domain_neurons_is_the_union_per_group():
    rows = [{"id": "a", "group": "bio", "neurons": [[0, 1], [1, 2]]},
            {"id": "b", "group": "geo", "neurons": [[0, 1]]},
            {"id": "c", "group": "bio", "neurons": [[1, 2], [3, 4]]}]
    assert pr.domain_neurons(rows) == {"bio": {(0, 1), (1, 2), (3, 4)}, "geo": {(0, 1)}}


def _rec(qid, group, k, gold, neuron, prompt, n=5):
    return {"id": qid, "group": group, "prompt": k, "gold": gold, "n_neurons": n,
            "neuron_predicted": neuron, "prompt_predicted": prompt}


def test_table7_arithmetic_and_paper_columns(tmp_path):
    records = [
        _rec("b1", "biology", 0, "A", "A", "A"), _rec("b1", "biology", 1, "B", "C", "B"),
        _rec("b1", "biology", 2, "C", "C", "D"), _rec("b2", "biology", 0, "D", None, "D"),
        _rec("x1", "newdomain", 0, "A", "A", "B", n=2),
    ]
    assert list(t7.table7(records).columns) == list(t7.TABLE7_COLUMNS)
    table = t7.table7(records).set_index("group")
    bio = table.loc["biology"]
    assert bio["prompts"] == 4 and bio["queries"] == 2 and bio["neurons"] == 5
    assert bio["neuron_based"] == pytest.approx(2 / 4)  # None counts as wrong
    assert bio["prompt_based"] == pytest.approx(3 / 4)
    assert bio["agreement"] == pytest.approx(1 / 4)
    assert bio["paper_neuron_based"] == 0.96 and bio["paper_prompt_based"] == 0.96
    assert bio["diff_neuron_based"] == pytest.approx(0.5 - 0.96)
    assert math.isnan(table.loc["newdomain", "paper_neuron_based"])
    overall = table.loc["ALL"]
    assert overall["prompts"] == 5 and overall["neuron_based"] == pytest.approx(3 / 5)
    assert math.isnan(overall["paper_prompt_based"])
    # A demo world's "biology" is not the paper's biology.
    demo = t7.table7(records, dataset="demo-domain").set_index("group")
    assert demo["paper_neuron_based"].isna().all() and demo["diff_neuron_based"].isna().all()
    mapped = t7.table7(records, dataset="domain-released",
                       paper_datasets={"domain-released": "domain"}).set_index("group")
    assert mapped.loc["biology", "paper_neuron_based"] == 0.96
    write_csv(tmp_path / "t7.csv", t7.table7(records))
    assert pd.read_csv(tmp_path / "t7.csv").shape == (3, len(t7.TABLE7_COLUMNS))
    with pytest.raises(InputError, match="gold"):
        t7.table7([{"id": "a", "group": "g"}])


def _shared_data() -> Path:
    env = os.environ.get("QRNCA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (_shared_data() / "mmlu" / "val").is_dir(), reason="no shared MMLU data")
def test_heldout_queries_are_every_eligible_validation_question():
    """The workflow's held-out set (Table 7): every eligible question of the val split."""
    from qrnca.datasets import build_from_spec

    spec = {"name": "domain", "source": "mmlu", "groups": {"biology": 100, "chemistry": 100}}
    queries = build_from_spec(spec, str(_shared_data() / "mmlu"), split="val")
    groups = pd.Series([q["group"] for q in queries]).value_counts()
    assert groups["biology"] >= 30 and groups["chemistry"] >= 20
    assert all(len(q["prompts"]) == 3 and "-val-" in q["id"] for q in queries)
    with pytest.raises(InputError, match="astrology"):
        build_from_spec({**spec, "groups": {"astrology": 1}}, str(_shared_data() / "mmlu"),
                        split="val")
