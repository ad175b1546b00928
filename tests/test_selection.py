"""QRNCA selection against a hand-computed run of 10 queries.

Neurons: A=(0,0) B=(1,2) C=(0,1) D=(2,3) E=(3,0) F=(3,4) G=(2,0) H=(1,1) on a 4 x 5 grid, t = 0.2.

q0 (3 prompts):
  p0 ig_max 1.0: E 1.0, A 0.5, D 0.5, F 0.2 (= t*max: not coarse, strict >)
  p1 ig_max 2.0: B 2.0, A 0.5, G 0.4 (= t*max: not coarse)
  p2 ig_max 0.5: C 0.5, D 0.1 (= t*max: not coarse)
  summed IG where coarse: A 1.0, B 2.0, C 0.5, D 0.5, E 1.0; Z = 5.0
  NA: A .2, B .4, C .1, D .1, E .2
fillers (1 prompt, ig_max 1, all IG 1): q1-q3 {A,E}, q4-q5 {B,E}, q6-q8 {E}, q9 {H}
|C| = 10 -> counts A 4, B 3, C 1, D 1, E 9, H 1; threshold int(0.3*10) = 3 -> common {A, E}
ICA: A ln(10/5)=ln2, B ln(10/4)=ln2.5, C = D = H = ln(10/2)=ln5, E ln(10/10)=0
q0 NA*ICA: B .4 ln2.5 = .3665, C = D = .1 ln5 = .1609 (tie -> C (0,1) before D (2,3)),
           A .2 ln2 = .1386, E 0 (dropped: not > 0)
"""

import math

import pytest

from qrnca.errors import InputError
from qrnca.neurons.selection import (AttributionRecordError, coarse_neurons, common_neurons, ica,
                                     query_cluster, run_qrnca, select)
from record_builders import prompt

A, B, C, D, E, F, G, H = (0, 0), (1, 2), (0, 1), (2, 3), (3, 0), (3, 4), (2, 0), (1, 1)



def record(qid, group, prompts):
    return {"id": qid, "group": group, "shape": [4, 5], "prompts": prompts}


def run_records():
    q0 = record(
        "q0",
        "g1",
        [
            prompt(
                1.0, {E: 1.0, D: 0.5, A: 0.5, F: 0.2}
            ),  # D listed before A: ties must not follow file order
            prompt(2.0, {B: 2.0, A: 0.5, G: 0.4}),
            prompt(0.5, {C: 0.5, D: 0.1}),
        ],
    )
    fillers = [[A, E]] * 3 + [[B, E]] * 2 + [[E]] * 3 + [[H]]
    recs = [q0] + [
        record(f"q{k}", "g2", [prompt(1.0, {n: 1.0 for n in neurons})])
        for k, neurons in enumerate(fillers, start=1)
    ]
    return recs


def test_coarse_is_strictly_above_t_times_ig_max():
    p = prompt(1.0, {E: 1.0, D: 0.5, A: 0.5, F: 0.2})
    assert coarse_neurons(p, 0.2) == {E: 1.0, D: 0.5, A: 0.5}
    # the stored ig_max decides, not the largest stored score
    assert coarse_neurons(prompt(10.0, {A: 1.0, B: 2.5}), 0.2) == {B: 2.5}
    # no positive attribution: nothing passes
    assert coarse_neurons(prompt(-1.0, {A: -1.0}), 0.2) == {}


def test_cluster_na():
    na = query_cluster(run_records()[0], 0.2)
    assert na == pytest.approx({A: 0.2, B: 0.4, C: 0.1, D: 0.1, E: 0.2})
    assert sum(na.values()) == pytest.approx(1.0)


def test_ica_and_common_cut():
    clusters = [set(query_cluster(r)) for r in run_records()]
    values = ica(clusters)
    assert values[A] == pytest.approx(math.log(2))
    assert values[B] == pytest.approx(math.log(2.5))
    assert values[C] == values[D] == values[H] == pytest.approx(math.log(5))
    assert values[E] == pytest.approx(0.0)
    common, threshold, counts = common_neurons(clusters, 0.3)
    assert threshold == 3
    assert common == {A, E}  # A in 4 clusters is common, B in exactly 3 is not
    assert counts == {A: 4, E: 9}


def test_common_threshold_truncates():
    # |C| = 10, u = 0.3: 3 clusters -> not common, 4 -> common
    clusters = [{(0, 0), (0, 1)}] * 3 + [{(0, 1)}] + [set()] * 6
    common, threshold, _ = common_neurons(clusters, 0.3)
    assert threshold == 3 and common == {(0, 1)}
    # |C| = 7, u = 0.3: int(2.1) = 2, so 3 clusters are common
    common, threshold, _ = common_neurons([{(0, 0)}] * 3 + [set()] * 4, 0.3)
    assert threshold == 2 and common == {(0, 0)}


def test_qrnca_rows_hand_computed():
    rows = {r["id"]: r for r in select(run_records(), "qrnca")}
    q0 = rows["q0"]
    assert q0["group"] == "g1"
    assert q0["neurons"] == [list(B), list(C), list(D)]
    assert q0["scores"] == pytest.approx([0.4 * math.log(2.5), 0.1 * math.log(5), 0.1 * math.log(5)])
    assert rows["q1"]["neurons"] == []  # only A (common) has NA*ICA > 0
    assert rows["q9"]["neurons"] == [list(H)] and rows["q9"]["scores"] == pytest.approx([math.log(5)])
    assert [r["id"] for r in select(run_records())] == [f"q{k}" for k in range(10)]


def test_ablations_hand_computed():
    recs = run_records()
    with_common = {r["id"]: r for r in select(recs, "qrnca_with_common")}
    assert with_common["q0"]["neurons"] == [list(B), list(C), list(D), list(A)]
    assert with_common["q1"]["neurons"] == [list(A)]
    no_ica = {r["id"]: r for r in select(recs, "qrnca_no_ica")}
    # NA ranking B .4, A .2 = E .2 (tie: A (0,0) first), C .1, D .1; A and E are common
    assert no_ica["q0"]["neurons"] == [list(B), list(C), list(D)]
    assert no_ica["q0"]["scores"] == pytest.approx([0.4, 0.1, 0.1])
    # top v is taken before common neurons are removed
    assert select(recs, "qrnca_no_ica", top_v=3)[0]["neurons"] == [list(B)]
    assert select(recs, "qrnca", top_v=2)[0]["neurons"] == [list(B), list(C)]
    assert select(recs, "qrnca_with_common", top_v=3)[0]["neurons"] == [list(B), list(C), list(D)]


def test_common_json_and_extras():
    run = run_qrnca(run_records())
    assert run.common_json() == {
        "threshold": 3,
        "clusters": 10,
        "neurons": [list(E), list(A)],
        "counts": [9, 4],
    }
    extras = run.cluster_score_records()
    q0 = extras[0]
    assert q0["shape"] == [4, 5]
    assert q0["neurons"] == [list(B), list(C), list(D), list(A), list(E)]
    assert q0["na"] == pytest.approx([0.4, 0.1, 0.1, 0.2, 0.2])
    assert q0["score"] == pytest.approx([n * i for n, i in zip(q0["na"], q0["ica"])])


def test_bad_input_names_the_query():
    recs = run_records()
    recs[3]["prompts"][0]["ig"][0] = float("nan")
    with pytest.raises(AttributionRecordError, match="q3"):
        select(recs)
    recs = run_records()
    recs[2]["prompts"][0]["neurons"][0] = [4, 0]  # layer outside the 4-layer grid
    with pytest.raises(AttributionRecordError, match="q2.*outside"):
        select(recs)
    recs = run_records()
    recs[5]["id"] = "q4"
    with pytest.raises(AttributionRecordError, match="twice"):
        select(recs)
    recs = run_records()
    recs[1]["shape"] = [4, 6]
    with pytest.raises(AttributionRecordError, match="shape"):
        select(recs)
    with pytest.raises(InputError, match="unknown QRNCA method"):
        select(run_records(), "qrnca_magic")


@pytest.mark.parametrize(
    "neurons, ig, message",
    [
        ([[0, 0], [0, 0]], [1.0, 0.5], "listed twice"),
        ([[0, 0], [1.5, 0]], [1.0, 0.5], "entry 1: neuron must be"),
        ([[0, 0], [1, 0]], [1.0, "0.5"], "entry 1: score must be"),
        ([[0, 0], [1, 7]], [1.0, 0.5], r"entry 1: neuron \[1, 7\] is outside"),
        ([[0, 0]], [1.0, 0.5], "equal length"),
    ],
)
def test_malformed_prompt_entries(neurons, ig, message):
    p = {"ig_max": 1.0, "neurons": neurons, "ig": ig}
    with pytest.raises(AttributionRecordError, match=message):
        coarse_neurons(p, 0.2, shape=(4, 5), where="query 'x', prompt 0")
