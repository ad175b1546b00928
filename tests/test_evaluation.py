"""Evaluation arithmetic (PCR, flips) on hand-made records, and an end-to-end evaluation of a
few hand-written queries on a tiny model."""

import json
import math

import numpy as np
import pytest
import torch

from qrnca.errors import InputError
from qrnca.evaluation import runner as ev
from qrnca.evaluation import records as er
from qrnca.evaluation.interventions import Edit, multipliers
from qrnca.io import read_jsonl
from qrnca.models import layouts
from qrnca.models.loading import PromptEncoding, letter_token_ids, load_model
from qrnca.models.tiny import save_tiny
from qrnca.outputs import evaluation_tables as et
from qrnca.outputs.evaluation_plots import group_change_frame, save_group_changes


def rec(qid, group, op, s, p0, p1, gold="A", before="A", after="A", prompt=0):
    return {"id": qid, "group": group, "op": op, "set": s, "prompt_index": prompt, "gold": gold,
            "p0": p0, "p1": p1, "predicted_before": before, "predicted_after": after}


# ------------------------------------------------------------------ arithmetic on hand-made records

def test_ratio_of_means_and_mean_of_ratios_differ_as_computed_by_hand():
    p0, p1 = [0.1, 0.5], [0.2, 0.5]
    assert et.probability_change(p0, p1, "ratio_of_means") == pytest.approx(0.05 / 0.3)
    assert et.probability_change(p0, p1, "mean_of_ratios") == pytest.approx(0.5)
    with pytest.raises(InputError, match="pcr_average"):
        et.probability_change(p0, p1, "median")


def test_pcr_summary_per_op_and_group():
    records = [
        rec("q1", "bio", "suppress", "related", 0.4, 0.1),
        rec("q1", "bio", "suppress", "related", 0.2, 0.1),
        rec("q1", "bio", "suppress", "unrelated", 0.5, 0.45),
        rec("q2", "geo", "suppress", "related", 0.5, 0.5),
        rec("q2", "geo", "suppress", "unrelated", 0.3, 0.3),
        rec("q1", "bio", "boost", "related", 0.2, 0.6),
        rec("q1", "bio", "boost", "unrelated", 0.2, 0.3),
    ]
    summary = et.pcr_summary(records).set_index("op")
    # suppress related: mean(p1-p0) = (-0.3 - 0.1 + 0) / 3, mean(p0) = 1.1 / 3
    assert summary.loc["suppress", "change_related"] == pytest.approx(-0.4 / 1.1)
    assert summary.loc["suppress", "change_unrelated"] == pytest.approx(-0.05 / 0.8)
    assert summary.loc["suppress", "pcr"] == pytest.approx((0.4 / 1.1) / (0.05 / 0.8))
    assert summary.loc["boost", "pcr"] == pytest.approx(2.0 / 0.5)
    assert summary.loc["suppress", "n_related"] == 3 and summary.loc["suppress", "queries"] == 2
    by_group = et.pcr_summary(records, by=("group",)).set_index(["op", "group"])
    assert by_group.loc[("suppress", "bio"), "change_related"] == pytest.approx(-0.4 / 0.6)
    assert math.isnan(by_group.loc[("suppress", "geo"), "pcr"])  # 0 / 0
    mor = et.pcr_summary(records, "mean_of_ratios").set_index("op")
    assert mor.loc["suppress", "change_related"] == pytest.approx((-0.75 - 0.5 + 0) / 3)


def test_division_by_zero_is_reported_not_raised():
    records = [rec("q", "g", "boost", "related", 0.2, 0.4), rec("q", "g", "boost", "unrelated", 0.3, 0.3)]
    assert et.pcr_summary(records)["pcr"].iloc[0] == math.inf
    zero = [rec("q", "g", "boost", "related", 0.0, 0.1), rec("q", "g", "boost", "unrelated", 0.0, 0.0)]
    summary = et.pcr_summary(zero)
    assert summary["change_related"].iloc[0] == math.inf
    assert math.isnan(summary["change_unrelated"].iloc[0])
    assert math.isnan(et.pcr_summary(zero, "mean_of_ratios")["change_unrelated"].iloc[0])


def test_flip_rates_and_initial_subsets():
    records = [
        # gold A; prompt 1 initially right and flips; prompt 2 initially wrong and flips to gold;
        # prompt 3 initially wrong and stays; prompt 4 initially right and stays
        rec("q", "g", "boost", "related", .1, .2, "A", "A", "B"),
        rec("q", "g", "boost", "related", .1, .2, "A", "C", "A"),
        rec("q", "g", "boost", "related", .1, .2, "A", "D", "D"),
        rec("q", "g", "boost", "related", .1, .2, "A", "A", "A"),
        rec("q", "g", "boost", "unrelated", .1, .2, "A", "A", "B"),  # unrelated: not counted
        rec("q", "g", "suppress", "related", .1, .0, "B", "B", "C"),
    ]
    flips = et.flip_summary(records).set_index("op")
    assert flips.loc["boost", "flip_rate"] == pytest.approx(50.0)
    assert flips.loc["boost", "n"] == 4
    assert flips.loc["boost", "flip_rate_initially_wrong"] == pytest.approx(50.0)
    assert flips.loc["boost", "n_initially_wrong"] == 2
    assert flips.loc["boost", "flip_rate_initially_right"] == pytest.approx(50.0)
    assert flips.loc["boost", "to_gold_rate_initially_wrong"] == pytest.approx(50.0)
    assert flips.loc["suppress", "flip_rate_initially_right"] == pytest.approx(100.0)
    assert math.isnan(flips.loc["suppress", "flip_rate_initially_wrong"])


def test_tables_put_paper_values_beside_ours():
    mk = lambda related_p1: [rec("q", "g", "boost", "related", 0.2, related_p1, "A", "A", "B"),  # noqa: E731
                             rec("q", "g", "boost", "unrelated", 0.2, 0.3),
                             rec("q", "g", "suppress", "related", 0.2, 0.0, "A", "A", "A"),
                             rec("q", "g", "suppress", "unrelated", 0.2, 0.1)]
    results = {("domain", "logprob_increase"): mk(0.6), ("domain", "qrnca"): mk(0.8),
               ("demo", "qrnca"): mk(0.8)}
    paper4 = {"qrnca": {"domain": {"boost": 4.4, "suppress": 5.6}}}
    t4 = et.table4(results, paper=paper4)
    assert list(t4["method"][:4]) == ["qrnca", "qrnca", "logprob_increase", "logprob_increase"]
    row = t4[(t4.dataset == "domain") & (t4.method == "qrnca") & (t4.op == "boost")].iloc[0]
    assert row["pcr"] == pytest.approx(6.0) and row["paper_pcr"] == 4.4
    assert row["diff"] == pytest.approx(1.6)
    assert t4[t4.method == "logprob_increase"]["paper_pcr"].isna().all()
    assert t4[t4.dataset == "demo"]["paper_pcr"].isna().all()
    mapped = et.table4(results, paper=paper4, paper_datasets={"demo": "domain"})
    assert mapped[(mapped.dataset == "demo") & (mapped.op == "suppress")]["paper_pcr"].iloc[0] == 5.6

    paper6 = {"qrnca": {"domain": {"boost": {"value": 12.6, "upper_bound": None}}},
              "logprob_increase": {"domain": {"suppress": {"value": None, "upper_bound": 0.3}}}}
    t6 = et.table6(results, paper=paper6)
    row = t6[(t6.dataset == "domain") & (t6.method == "qrnca") & (t6.op == "boost")].iloc[0]
    assert row["flip_rate"] == 100.0 and row["paper_flip_rate"] == 12.6
    assert row["diff"] == pytest.approx(87.4) and row["subset"] == "initially_wrong"
    bound = t6[(t6.dataset == "domain") & (t6.method == "logprob_increase") & (t6.op == "suppress")].iloc[0]
    assert bound["paper_upper_bound"] == 0.3 and math.isnan(bound["paper_flip_rate"])
    assert bound["subset"] == "initially_right" and bound["flip_rate_subset"] == 0.0


def test_default_paper_values_are_wired():
    pytest.importorskip("qrnca.outputs.paper_values")
    records = [rec("q", "g", "boost", "related", 0.2, 0.4), rec("q", "g", "boost", "unrelated", 0.2, 0.3)]
    t4 = et.table4({("language", "qrnca"): records})
    assert t4["paper_pcr"].iloc[0] == 41.2
    t6 = et.table6({("language", "qrnca"): records})
    assert t6["paper_flip_rate"].iloc[0] == 16.6


def test_settings_validate():
    with pytest.raises(InputError, match="pcr_average"):
        ev.EvaluationSettings(pcr_average="mode")
    with pytest.raises(InputError, match="ops"):
        ev.EvaluationSettings(ops=("amplify",))
    with pytest.raises(InputError, match="unknown evaluation settings"):
        ev.EvaluationSettings.from_config({"unrelated": 3})
    assert ev.EvaluationSettings.from_config({"seed": 4}).as_dict()["factors"] == {
        "boost": 2.0, "suppress": 0.0}


# ------------------------------------------------------------------ end to end on a tiny model

GROUPS = {"bio": ["cell", "gene", "leaf"], "geo": ["river", "hill", "coast"]}


def make_queries():
    queries = []
    for group, words in GROUPS.items():
        for qn, word in enumerate(words[:2]):
            prompts, answers, options = [], [], []
            for t in range(3):
                opts = [f"{word}{(j + t) % 4}" for j in range(4)]
                letter = "ABCD"[(qn + t) % 4]
                gold = f"{word}0"
                opts[opts.index(gold)], opts["ABCD".index(letter)] = opts["ABCD".index(letter)], gold
                lines = " ".join(f"{x} . {o}" for x, o in zip("ABCD", opts))
                prompts.append(f"template {t} : which {word} is it ? {lines} Response :")
                answers.append(letter)
                options.append(opts)
            queries.append({"id": f"{group}-{qn}", "group": group, "relation": None,
                            "fact": f"{group}-{qn}", "prompts": prompts, "answers": answers,
                            "options": options, "gold": f"{word}0",
                            "source": {"kind": "test", "file": "-", "row": qn}})
    return queries


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    queries = make_queries()
    corpus = [p for q in queries for p in q["prompts"]]
    path = save_tiny(tmp_path_factory.mktemp("tiny"), "llama", corpus, layers=2, hidden=32,
                     intermediate=48, heads=4)
    model, tokenizer = load_model({"name": "tiny", "path": str(path)})
    return model, tokenizer, queries


def neuron_records(queries, pick):
    return [{"id": q["id"], "group": q["group"], "neurons": pick(i), "scores": [1.0] * len(pick(i))}
            for i, q in enumerate(queries)]


def test_unrelated_prompts_are_from_other_groups_and_stable():
    queries = make_queries()
    settings = ev.EvaluationSettings(unrelated_prompts=3, unrelated_draws=2, seed=7)
    draw = ev.unrelated_prompts(queries[0], queries, settings)
    assert len(draw) == 6 and len(set(draw)) == 6
    assert all(pid.startswith("geo") for pid, _ in draw)
    assert draw == ev.unrelated_prompts(queries[0], queries, settings)
    assert draw == ev.unrelated_prompts(queries[0], list(reversed(queries)), settings)
    assert draw != ev.unrelated_prompts(queries[0], queries, ev.EvaluationSettings(seed=8,
                                                                                    unrelated_draws=2))
    with pytest.raises(InputError, match="only 6 prompts"):
        ev.unrelated_prompts(queries[0], queries, ev.EvaluationSettings(unrelated_prompts=7))


def test_neuron_sets_check_the_file_against_the_dataset():
    queries = make_queries()
    good = neuron_records(queries, lambda i: [[0, i]])
    assert ev.neuron_sets(good, queries)["bio-1"] == ((0, 1),)
    with pytest.raises(InputError, match="no neuron record"):
        ev.neuron_sets(good[:-1], queries, "qrnca.jsonl")
    bad = [dict(r) for r in good]
    bad[2]["group"] = "bio"
    with pytest.raises(InputError, match="row 3 .*group"):
        ev.neuron_sets(bad, queries, "qrnca.jsonl")
    bad = [dict(r) for r in good]
    bad[0]["neurons"] = [[0, "1"]]
    with pytest.raises(InputError, match="row 1"):
        ev.neuron_sets(bad, queries)


def test_end_to_end_evaluation(tiny, tmp_path):
    model, tokenizer, queries = tiny
    methods = {
        "qrnca": ev.neuron_sets(neuron_records(queries, lambda i: [[0, i], [1, 2 * i + 1]]), queries),
        "random": ev.neuron_sets(neuron_records(queries, lambda i: [[1, 40 - i]]), queries),
        "same_as_qrnca": ev.neuron_sets(neuron_records(queries, lambda i: [[1, 2 * i + 1], [0, i]]),
                                        queries),
    }
    settings = ev.EvaluationSettings(seed=3, chunk_size=8)
    run = ev.evaluate(model, tokenizer, queries, methods, settings, progress=False)
    assert run.stats["prompts"] == 12 and run.stats["prefix_passes"] == 12
    # 3 methods x 2 ops x (3 related + 3 unrelated) rows per query, 4 queries, + 1 clean per prompt
    assert run.stats["rows"] == 3 * 2 * 6 * 4 + 12
    for method, records in run.records.items():
        assert len(records) == 4 * 2 * 6
        assert [r["set"] for r in records[:6]] == ["related"] * 3 + ["unrelated"] * 3
        assert [r["op"] for r in records[:12]] == ["boost"] * 6 + ["suppress"] * 6
        for r in records:
            assert (r["set"] == "related") == (r["prompt_group"] == r["group"])
            assert r["set"] == "unrelated" or r["prompt_id"] == r["id"]
    # identical neuron sets give identical records; the unrelated draw is shared across methods
    assert run.records["qrnca"] == run.records["same_as_qrnca"]
    assert [r["prompt_id"] for r in run.records["random"]] == [r["prompt_id"] for r in run.records["qrnca"]]

    # check one suppressed unrelated record against a plain full-sequence forward
    letters = letter_token_ids(tokenizer, "bare")
    r = next(r for r in run.records["qrnca"] if r["op"] == "suppress" and r["set"] == "unrelated")
    owner = next(i for i, q in enumerate(queries) if q["id"] == r["id"])
    prompt = next(q for q in queries if q["id"] == r["prompt_id"])["prompts"][r["prompt_index"]]
    ids = PromptEncoding().ids(tokenizer, prompt)
    with torch.no_grad():
        clean = torch.softmax(model(ids).logits[0, -1], -1)[letters[r["gold"]]].item()
        mult = multipliers([Edit.of([(0, owner), (1, 2 * owner + 1)], 0.0)],
                           layouts.grid_shape(model), "cpu")
        with layouts.edit_last_position(model, layouts.multiply_edit(mult)):
            edited = torch.softmax(model(ids).logits[0, -1], -1)[letters[r["gold"]]].item()
    assert r["p0"] == pytest.approx(clean, abs=1e-6)
    assert r["p1"] == pytest.approx(edited, abs=1e-6)
    assert r["p0"] != r["p1"]

    paths = ev.write_evaluation(tmp_path / "evaluation", run, settings, {"model": "tiny"})
    assert [p.name for p in paths] == ["qrnca.jsonl", "random.jsonl", "same_as_qrnca.jsonl"]
    assert read_jsonl(paths[1]) == run.records["random"]
    meta = json.loads((tmp_path / "evaluation" / "settings.json").read_text())
    assert meta["settings"]["unrelated_prompts"] == 3 and meta["model"] == "tiny"
    frame = er.read_evaluation(paths[0])
    table = et.table4({("tinyset", "qrnca"): frame, ("tinyset", "random"): run.records["random"]})
    assert len(table) == 4 and np.isfinite(table["pcr"]).all()
    by_group = et.pcr_summary(frame, by=("group",))
    assert set(by_group["group"]) == {"bio", "geo"}

    out = save_group_changes(by_group, "suppress", [tmp_path / "fig.pdf", tmp_path / "fig.png"])
    assert all(p.stat().st_size > 1000 for p in out)
    # no creation date: a rerun (or the same run on a cluster) gives the same bytes
    assert b"/CreationDate" not in out[0].read_bytes()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["evaluation", "fig.pdf", "fig.png"]
    long = group_change_frame(by_group, "boost")
    assert len(long) == 4 and set(long["set"]) == {"related prompts", "unrelated prompts"}


def test_read_results_maps_files_dataset_major(tmp_path):
    from qrnca.io import write_jsonl

    paths = []
    for d in ("d1", "d2"):
        for m in ("qrnca", "random"):
            path = tmp_path / f"{d}-{m}.jsonl"
            write_jsonl(path, [{"id": f"{d}/{m}", "p0": 0.5, "p1": 0.4}])
            paths.append(path)
    results = er.read_results(paths, ["d1", "d2"], ["qrnca", "random"])
    assert {k: v["id"].iloc[0] for k, v in results.items()} == {
        ("d1", "qrnca"): "d1/qrnca", ("d1", "random"): "d1/random",
        ("d2", "qrnca"): "d2/qrnca", ("d2", "random"): "d2/random"}
    with pytest.raises(InputError, match="expected 4 evaluation files"):
        er.read_results(paths[:3], ["d1", "d2"], ["qrnca", "random"])


def test_each_edit_is_built_once_per_method_query_and_op(tiny, monkeypatch):
    """Every prompt a (method, query, op) touches reuses one Edit (and its cached arrays)."""
    model, tokenizer, queries = tiny
    methods = {"qrnca": ev.neuron_sets(neuron_records(queries, lambda i: [[0, i], [1, i]]), queries),
               "random": ev.neuron_sets(neuron_records(queries, lambda i: [[1, 3]]), queries)}
    built = []
    real = ev.Edit.of.__func__

    def counting(cls, neurons, factor):
        built.append(1)
        return real(cls, neurons, factor)

    monkeypatch.setattr(ev.Edit, "of", classmethod(counting))
    run = ev.evaluate(model, tokenizer, queries, methods, ev.EvaluationSettings(seed=3),
                      progress=False)
    assert len(built) == 2 * len(queries) * 2  # methods x queries x ops
    assert run.stats["rows"] == 2 * 2 * 6 * len(queries) + 12


def test_chunk_size_is_an_execution_setting_that_changes_no_result(tiny, tmp_path):
    """`evaluation.chunk_size` (rows per single-token pass) plans no rerun; it changes no
    prediction and no probability beyond float32 rounding (the matmul kernels differ with the
    batch size), and settings.json does not depend on it."""
    model, tokenizer, queries = tiny
    methods = {"qrnca": ev.neuron_sets(neuron_records(queries, lambda i: [[0, i], [1, 3]]),
                                       queries)}
    written, records = [], []
    for chunk in (1, 5, 64):
        settings = ev.EvaluationSettings(seed=3, chunk_size=chunk)
        run = ev.evaluate(model, tokenizer, queries, methods, settings, progress=False)
        out = tmp_path / f"chunk{chunk}"
        ev.write_evaluation(out, run, settings, {"model": "tiny"})
        written.append((out / "settings.json").read_bytes())
        records.append(run.records["qrnca"])
    assert written[0] == written[1] == written[2]
    for other in records[:2]:
        for a, b in zip(records[2], other):
            assert {k: v for k, v in a.items() if k not in ("p0", "p1")} == {
                k: v for k, v in b.items() if k not in ("p0", "p1")}
            assert b["p0"] == pytest.approx(a["p0"], rel=1e-5)
            assert b["p1"] == pytest.approx(a["p1"], rel=1e-5)
    meta = json.loads(written[0])
    assert "chunk_size" not in meta["settings"] and "pcr_average" not in meta["settings"]
    assert not {"seconds", "seconds_per_prompt", "single_token_passes"} & set(meta["stats"])


def test_a_non_finite_probability_is_refused_naming_query_and_prompt(tiny, tmp_path):
    from qrnca.errors import NonFiniteError

    model, tokenizer, queries = tiny
    methods = {"qrnca": ev.neuron_sets(neuron_records(queries, lambda i: [[0, i]]), queries)}
    settings = ev.EvaluationSettings()
    run = ev.evaluate(model, tokenizer, queries, methods, settings, progress=False)
    bad = run.records["qrnca"][7]
    bad["p1"] = float("nan")
    with pytest.raises(NonFiniteError, match=rf"p1 = nan for query '{bad['id']}'"):
        ev.write_evaluation(tmp_path / "evaluation", run, settings)
    assert not (tmp_path / "evaluation").exists()  # nothing written, not even settings.json
    # a NaN already in a file is named with the file when read (Tables 4 / 6, Figs. 3 / 4)
    from qrnca.io import write_jsonl

    path = tmp_path / "qrnca.jsonl"
    write_jsonl(path, run.records["qrnca"])
    with pytest.raises(NonFiniteError, match=rf"{path}, record 8: p1 = nan"):
        er.read_evaluation(path)


def test_evaluation_files_must_hold_exactly_the_datasets_queries(tmp_path):
    from qrnca.io import write_jsonl

    path = tmp_path / "qrnca.jsonl"
    write_jsonl(path, [{"id": "q1", "p0": 0.5, "p1": 0.4}, {"id": "q3", "p0": 0.5, "p1": 0.4}])
    with pytest.raises(InputError, match=r"qrnca.jsonl: evaluation records do not match the "
                                         r"dataset \(missing 1 of 2 queries: 'q2'; 1 queries "
                                         r"not in the dataset: 'q3'\)"):
        er.read_evaluation(path, ["q1", "q2"])
