"""A neuron method that does not apply to a model is recorded as such at every stage, never a
crashed job: attribution records, the baseline's neurons file, the evaluation, Tables 4 and 6."""

import json
import math

import pytest
import torch

from qrnca.attribution import attribute_dataset
from qrnca.attribution.logprob import logprob_applicability
from qrnca.errors import InputError
from qrnca.evaluation import runner as ev
from qrnca.evaluation import records as er
from qrnca.models.tiny import build_model, train_word_tokenizer
from qrnca.neurons.baselines import baseline_rows
from qrnca.neurons.methods import NOT_APPLICABLE, not_applicable_reason
from qrnca.neurons.selection import run_qrnca
from qrnca.outputs import evaluation_tables as et

WORDS = "respond with the letter . which city is it ? paris rome madrid berlin answer :"


class MaxNorm(torch.nn.Module):
    """A final norm whose statistics cannot be frozen into an affine map (no epsilon, not an
    RMS or LayerNorm): the log-probability increase is not defined for it."""

    def forward(self, x):
        return x / x.abs().amax(dim=-1, keepdim=True)


def _queries():
    out = []
    for q, group in enumerate(["geo", "geo", "hist", "hist"]):
        prompt = (f"respond with the letter . which city is it ? A . paris B . rome C . madrid "
                  f"D . berlin {'answer' if q % 2 else 'letter'} :")
        out.append({"id": f"q{q}", "group": group, "prompts": [prompt, prompt + " :", prompt],
                    "answers": ["ABCD"[q], "ABCD"[(q + 1) % 4], "ABCD"[(q + 2) % 4]]})
    return out


@pytest.fixture(scope="module")
def odd_model():
    tok = train_word_tokenizer([WORDS + " A B C D"])
    model = build_model("llama", vocab_size=len(tok), layers=2, hidden=32, intermediate=48, heads=4)
    model.model.norm = MaxNorm()
    return model.requires_grad_(False), tok


def test_the_reason_names_the_norm(odd_model):
    model, _ = odd_model
    reason = logprob_applicability(model)
    assert "MaxNorm" in reason and "final norm" in reason
    assert logprob_applicability(build_model("llama", vocab_size=20, layers=1, hidden=8,
                                             intermediate=8, heads=2)) is None


def test_every_stage_records_not_applicable(odd_model, tmp_path):
    model, tok = odd_model
    queries = _queries()
    path = attribute_dataset(model, tok, queries, tmp_path / "shard0of1.jsonl", steps=2,
                             progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 4
    assert all("MaxNorm" in r["logprob_increase"][NOT_APPLICABLE] for r in records)
    assert all(r["prompts"] and r["activation"]["neurons"] for r in records)  # the rest is there

    qrnca = run_qrnca(records).rows("qrnca")
    rows = baseline_rows(records, "logprob_increase", qrnca)
    assert [r["neurons"] for r in rows] == [[]] * 4
    reason = not_applicable_reason(rows, "logprob_increase.jsonl")
    assert "MaxNorm" in reason
    assert not_applicable_reason(baseline_rows(records, "activation", qrnca)) is None

    neurons = {"qrnca": ev.neuron_sets(qrnca, queries)}
    run = ev.evaluate(model, tok, queries, neurons, ev.EvaluationSettings(unrelated_prompts=2),
                      not_applicable={"logprob_increase": reason}, progress=False)
    assert run.records["logprob_increase"] == [{NOT_APPLICABLE: reason}]
    ev.write_evaluation(tmp_path / "evaluation", run, ev.EvaluationSettings())
    results = er.read_results(
        [tmp_path / "evaluation" / f"{m}.jsonl" for m in ("qrnca", "logprob_increase")],
        ["domain"], ["qrnca", "logprob_increase"])
    for table in (et.table4(results), et.table6(results)):
        assert list(table["method"]) == ["qrnca", "qrnca", "logprob_increase", "logprob_increase"]
        skipped = table[table["method"] == "logprob_increase"]
        assert skipped["note"].str.startswith("not applicable: ").all()
        assert skipped["note"].str.contains("MaxNorm").all()
        value = "pcr" if "pcr" in table else "flip_rate"
        assert skipped[value].map(math.isnan).all()
        assert (table[table["method"] == "qrnca"]["note"] == "").all()


def test_mixed_records_are_an_error():
    with pytest.raises(InputError, match="some records"):
        not_applicable_reason([{NOT_APPLICABLE: "x"}, {"id": "q"}], "f.jsonl")
