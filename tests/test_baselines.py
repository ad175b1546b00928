"""Baselines: counts matched to QRNCA, stable per-query seeding, KN* share rule, stored top-K."""

import pytest

from qrnca.errors import InputError
from qrnca.neurons.baselines import (BaselineError, baseline_rows, knowledge_neurons, query_seed,
                                     random_neurons)
from record_builders import prompt

A, B, C, D, E = (0, 0), (1, 2), (0, 1), (2, 3), (3, 0)



def block(scores):
    return {"neurons": [list(n) for n in scores], "scores": list(scores.values())}


def record(qid="q0", group="g"):
    # coarse (t = 0.2): p0 {A 1.0, B 0.5, C 0.3}; p1 {B 2.0, C 0.5}; p2 {A 0.25, D 0.5, E 0.2}
    return {
        "id": qid,
        "group": group,
        "shape": [4, 5],
        "prompts": [
            prompt(1.0, {A: 1.0, B: 0.5, C: 0.3, D: 0.2}),
            prompt(2.0, {B: 2.0, C: 0.5, A: 0.4}),  # A at exactly 0.2 * 2.0: not coarse
            prompt(0.5, {D: 0.5, A: 0.25, E: 0.2}),
        ],
        "activation": block({E: 5.0, A: 3.0, D: 3.0, B: 1.0}),
        "logprob_increase": block({C: 0.9, B: 0.8, A: 0.1}),
    }


def qrnca_row(qid, n, group="g"):
    return {"id": qid, "group": group, "neurons": [[0, k] for k in range(n)], "scores": [1.0] * n}


def test_knowledge_neurons_share_rule():
    # present in >= 2 of 3 prompts: A (p0, p2: 1.25), B (p0, p1: 2.5), C (p0, p1: 0.8); D and E only once
    got = knowledge_neurons(record(), t=0.2, kn_share=0.5)
    assert got == [(B, pytest.approx(2.5)), (A, pytest.approx(1.25)), (C, pytest.approx(0.8))]
    # p = 0: any neuron coarse in at least one prompt
    assert {n for n, _ in knowledge_neurons(record(), kn_share=0.0)} == {A, B, C, D, E}


def test_knowledge_neuron_rows_match_count():
    rows = baseline_rows([record()], "knowledge_neuron", [qrnca_row("q0", 2)])
    assert rows[0]["neurons"] == [list(B), list(A)]
    rows = baseline_rows([record()], "knowledge_neuron", [qrnca_row("q0", 2)], kn_match_count=False)
    assert rows[0]["neurons"] == [list(B), list(A), list(C)]
    # fewer KN* neurons than QRNCA: keeps what it has
    rows = baseline_rows([record()], "knowledge_neuron", [qrnca_row("q0", 10)])
    assert len(rows[0]["neurons"]) == 3


def test_stored_top_k_truncated_with_tie_break():
    rows = baseline_rows([record()], "activation", [qrnca_row("q0", 3)])
    assert rows[0]["neurons"] == [list(E), list(A), list(D)]  # A (0,0) before D (2,3) at 3.0
    assert rows[0]["scores"] == [5.0, 3.0, 3.0]
    rows = baseline_rows([record()], "logprob_increase", [qrnca_row("q0", 2)])
    assert rows[0]["neurons"] == [list(C), list(B)]
    with pytest.raises(BaselineError, match="q0.*only 3 stored"):
        baseline_rows([record()], "logprob_increase", [qrnca_row("q0", 4)])


def test_random_is_stable_distinct_and_per_query():
    a = random_neurons([4, 5], 20, seed=7, query_id="q0")
    assert sorted(a) == [(l, i) for l in range(4) for i in range(5)]  # all 20 distinct cells
    assert random_neurons([32, 11008], 15, 7, "q0") == random_neurons([32, 11008], 15, 7, "q0")
    assert random_neurons([32, 11008], 15, 7, "q0") != random_neurons([32, 11008], 15, 7, "q1")
    assert random_neurons([32, 11008], 15, 7, "q0") != random_neurons([32, 11008], 15, 8, "q0")
    # a pinned value: the draw must not change across Python versions / runs
    assert query_seed(0, "q0") == 8395700054771531617  # first 8 bytes of sha256(b"0:q0")
    assert random_neurons([32, 11008], 3, 0, "q0") == [(29, 10087), (24, 2420), (8, 8878)]
    recs = [record("q0"), record("q1")]
    rows = baseline_rows(recs, "random", [qrnca_row("q0", 3), qrnca_row("q1", 0)], seed=1)
    assert len(rows[0]["neurons"]) == 3 and rows[1]["neurons"] == []
    assert all(0 <= l < 4 and 0 <= i < 5 for l, i in rows[0]["neurons"])
    # the draw of q0 does not depend on the other queries of the run
    alone = baseline_rows([record("q0")], "random", [qrnca_row("q0", 3)], seed=1)
    assert alone[0]["neurons"] == rows[0]["neurons"]


def test_errors():
    with pytest.raises(InputError, match="no QRNCA row"):
        baseline_rows([record("q0")], "activation", [qrnca_row("other", 1)])
    with pytest.raises(InputError, match="unknown baseline"):
        baseline_rows([record("q0")], "bogus", [qrnca_row("q0", 1)])
    with pytest.raises(BaselineError):
        random_neurons([2, 2], 5, 0, "q0")


def test_every_baseline_of_the_registry_has_a_selector():
    from qrnca.neurons.baselines import SELECTORS
    from qrnca.neurons.methods import BASELINE_METHODS

    assert set(SELECTORS) == set(BASELINE_METHODS)
