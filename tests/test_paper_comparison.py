"""The paper-comparison summary on small hand-made tables: a number present is compared, an
absent one is "not produced", a bound is checked not subtracted, a demo dataset is never set
beside the paper."""

import math

import numpy as np
import pandas as pd
import pytest

from qrnca.errors import InputError
from qrnca.outputs import paper_comparison as pc
from qrnca.outputs import paper_values


def _table4(dataset="domain"):
    return pd.DataFrame([
        {"dataset": dataset, "method": "qrnca", "op": "boost", "pcr": 5.0, "pcr_average": "ratio_of_means"},
        {"dataset": dataset, "method": "qrnca", "op": "suppress", "pcr": 4.0, "pcr_average": "ratio_of_means"},
        {"dataset": dataset, "method": "logprob_increase", "op": "boost", "pcr": 3.0,
         "pcr_average": "ratio_of_means"},
    ])


def _table6():
    return pd.DataFrame([
        {"dataset": "domain", "method": "random", "op": "boost", "flip_rate": 0.2},
        {"dataset": "domain", "method": "random", "op": "suppress", "flip_rate": 1.5},
        {"dataset": "domain", "method": "qrnca", "op": "suppress", "flip_rate": 20.0},
    ])


def _row(df, table, dataset, item, model="m"):
    hit = df[(df["model"] == model) & (df["table"] == table) & (df["dataset"] == dataset)
             & (df["item"] == item)]
    assert len(hit) == 1, (table, dataset, item, hit)
    return hit.iloc[0]


def test_present_value_is_compared_and_absent_is_not_produced():
    df = pc.paper_comparison({"m": {"table4": _table4()}})
    assert list(df.columns) == list(pc.COLUMNS)
    boost = _row(df, "table4", "domain", "qrnca / boost")
    assert boost["status"] == "compared" and boost["paper"] == "4.4" and boost["ours"] == "5"
    assert boost["difference"] == pytest.approx(5.0 - 4.4)
    assert boost["paper_model"] == paper_values.MODEL
    # A method of the paper the run did not produce.
    kn = _row(df, "table4", "domain", "knowledge_neuron / boost")
    assert kn["status"] == "not produced" and kn["ours"] == "" and math.isnan(kn["difference"])
    assert kn["paper_value"] == 1.0
    # The whole language dataset is missing: every paper language number is "not produced".
    lang = df[(df["table"] == "table4") & (df["dataset"] == "language")]
    assert len(lang) == 12 and set(lang["status"]) == {"not produced"}
    # Our method the paper did not run is listed, not compared.
    extra = _row(df, "table4", "domain", "logprob_increase / boost")
    assert extra["status"] == "no paper counterpart" and extra["paper"] == "—"
    assert math.isnan(extra["difference"]) and extra["ours_value"] == 3.0
    # Tables not given at all: all their paper numbers are "not produced", none invented.
    t3 = df[df["table"] == "table3"]
    assert len(t3) == 13 and set(t3["status"]) == {"not produced"} and (t3["ours"] == "").all()
    assert t3["ours_value"].isna().all()
    # Every paper number appears exactly once for the model.
    paper_rows = df[df["status"] != "no paper counterpart"]
    assert len(paper_rows) == 13 + 24 + 16 + 6 + 6


def test_upper_bound_is_checked_not_subtracted():
    df = pc.paper_comparison({"m": {"table6": _table6()}})
    low = _row(df, "table6", "domain", "random / boost")
    high = _row(df, "table6", "domain", "random / suppress")
    assert low["paper"] == "≤ 0.3" and low["status"] == "within bound"
    assert math.isnan(low["paper_value"]) and low["paper_upper_bound"] == 0.3
    assert math.isnan(low["difference"])
    assert high["status"] == "above bound"
    value = _row(df, "table6", "domain", "qrnca / suppress")
    assert value["difference"] == pytest.approx(20.0 - 18.2)
    assert _row(df, "table6", "domain", "activation / boost")["status"] == "not produced"


def test_demo_dataset_is_not_compared_even_with_paper_group_names():
    t3 = pd.DataFrame({"dataset": ["demo-domain", "demo-domain"], "group": ["biology", "ALL"],
                       "mean_neurons": [9.0, 9.0]})
    t7 = pd.DataFrame({"dataset": ["demo-domain"], "group": ["biology"], "neuron_based": [0.5],
                       "prompt_based": [0.9]})
    df = pc.paper_comparison({"demo-tiny": {"table3": t3, "table7": t7}})
    demo = df[df["dataset"] == "demo-domain"]
    assert set(demo["status"]) == {"no paper counterpart"} and len(demo) == 4
    assert "not one of the paper's datasets" in demo.iloc[0]["note"]
    bio = df[(df["table"] == "table3") & (df["item"] == "biology")]
    assert list(bio["status"]) == ["not produced", "no paper counterpart"]
    # ...unless the mapping says the dataset stands for the paper's.
    mapped = pc.paper_comparison({"m": {"table3": t3, "table7": t7}},
                                 paper_datasets={"demo-domain": "domain"})
    row = _row(mapped, "table3", "demo-domain", "biology")
    assert row["status"] == "compared" and row["difference"] == pytest.approx(9.0 - 13.1)
    assert "as the paper's 'domain'" in row["note"]
    overall = _row(mapped, "table3", "demo-domain", "overall")
    assert overall["difference"] == pytest.approx(9.0 - 12.9)
    t7row = _row(mapped, "table7", "demo-domain", "biology / neuron_based")
    assert t7row["difference"] == pytest.approx(0.5 - 0.96)
    assert _row(mapped, "table7", "demo-domain", "chemistry / prompt_based")["status"] == "not produced"


def test_table3_as_mapping_and_language_overall_has_no_paper_value():
    lang = pd.DataFrame({"group": ["fr", "ALL"], "queries": [3, 3], "mean_neurons": [12.0, 12.0]})
    df = pc.paper_comparison({"m": {"table3": {"language": lang}}})
    assert _row(df, "table3", "language", "fr")["difference"] == pytest.approx(12.0 - 12.7)
    assert _row(df, "table3", "language", "overall")["status"] == "no paper counterpart"
    with pytest.raises(InputError, match="no 'dataset' column"):
        pc.paper_comparison({"m": {"table3": lang}})


def _matrix(groups, values):
    return pd.DataFrame(np.array(values, dtype=float), index=groups, columns=groups)


def test_fig2a_range_and_highest_pair_from_matrices_and_long_form():
    groups = ["biology", "physics", "geography"]
    m = _matrix(groups, [[1, 0.30, 0.50], [0.30, 1, 0.40], [0.50, 0.40, 1]])
    summary = pc.overlap_range(m)
    assert summary == {"min": 0.30, "max": 0.50, "highest_pair": ("biology", "geography")}
    df = pc.paper_comparison({"m": {"fig2a": {"domain": m}}})
    assert _row(df, "fig2a", "domain", "min off-diagonal")["difference"] == pytest.approx(0.30 - 0.35)
    assert _row(df, "fig2a", "domain", "max off-diagonal")["difference"] == pytest.approx(0.50 - 0.49)
    pair = _row(df, "fig2a", "domain", "highest pair")
    assert pair["status"] == "same pair" and pair["paper"] == "biology–geography"
    assert pair["ours"] == "biology–geography"
    # The long form of the Fig. 2a CSV; "ja–zh" is the same unordered pair as the paper's "zh–ja".
    langs = ["ja", "zh", "fr"]
    lm = _matrix(langs, [[1, 0.2, 0.01], [0.2, 1, 0.05], [0.01, 0.05, 1]])
    long = (lm.rename_axis("group_a").rename_axis(columns="group_b").stack().rename("jaccard")
            .reset_index().assign(dataset="language"))
    df = pc.paper_comparison({"m": {"fig2a": long}})
    assert _row(df, "fig2a", "language", "highest pair")["status"] == "same pair"
    assert _row(df, "fig2a", "language", "min off-diagonal")["ours_value"] == pytest.approx(0.01)
    assert "jaccard" in _row(df, "fig2a", "language", "max off-diagonal")["note"]
    other = _matrix(["biology", "physics", "geography"], [[1, .9, .1], [.9, 1, .1], [.1, .1, 1]])
    df = pc.paper_comparison({"m": {"fig2a": {"domain": other}}})
    assert _row(df, "fig2a", "domain", "highest pair")["status"] == "different pair"


def test_two_models_and_bad_input():
    df = pc.paper_comparison({"a": {"table4": _table4()}, "b": {}})
    assert list(dict.fromkeys(df["model"])) == ["a", "b"]
    assert _row(df, "table4", "domain", "qrnca / boost", model="b")["status"] == "not produced"
    with pytest.raises(InputError, match="unknown tables"):
        pc.paper_comparison({"m": {"table5": _table4()}})
    with pytest.raises(InputError, match="missing columns"):
        pc.paper_comparison({"m": {"table4": _table4().drop(columns="pcr")}})


def test_writers_markdown_sections_and_csv(tmp_path):
    t3 = pd.DataFrame({"dataset": ["demo-domain"], "group": ["biology"], "mean_neurons": [9.0]})
    df = pc.paper_comparison({"llama2-7b-chat": {"table4": _table4(), "table6": _table6()},
                              "demo-tiny": {"table3": t3}})
    pc.write_markdown(df, tmp_path / "cmp.md")
    text = (tmp_path / "cmp.md").read_text(encoding="utf-8")
    for title in pc.TITLES.values():
        assert f"## {title}" in text
    assert "`llama2-7b-chat`" in text and "`demo-tiny`" in text
    assert "could not be compared because this run did not produce them" in text
    assert "| llama2-7b-chat | domain | qrnca / boost | 4.4 | 5 | 0.6 | compared |" in text
    assert "≤ 0.3" in text and "within bound" in text
    assert "Not produced by this run" in text and "No paper counterpart" in text
    pc.write_csv(df, tmp_path / "cmp.csv")
    back = pd.read_csv(tmp_path / "cmp.csv")
    assert list(back.columns) == list(pc.COLUMNS) and len(back) == len(df)
    with pytest.raises(InputError):
        pc.write_csv(df.drop(columns="ours"), tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_accepts_the_tables_the_library_produces():
    from qrnca.outputs import analysis, evaluation_tables, prediction_table

    def rec(qid, group, op, s, p0, p1, before="A", after="A"):
        return {"id": qid, "group": group, "op": op, "set": s, "gold": "A", "p0": p0, "p1": p1,
                "predicted_before": before, "predicted_after": after}

    records = [rec("q1", "biology", op, s, 0.4, p1, after=after)
               for op, p1, after in (("boost", 0.6, "A"), ("suppress", 0.1, "B"))
               for s in ("related", "unrelated")]
    results = {("domain", "qrnca"): records}
    t4, t6 = evaluation_tables.table4(results), evaluation_tables.table6(results)
    rows = [{"id": "q1", "group": "biology", "neurons": [[0, 1], [0, 2]]}]
    t3 = analysis.table3(rows).assign(dataset="domain")
    t7 = prediction_table.table7([{"id": "h1", "group": "biology", "prompt": 0, "gold": "A",
                                   "n_neurons": 2, "neuron_predicted": "A", "prompt_predicted": "B"}])
    fig2a = {"domain": analysis.overlap_matrix(rows)}
    df = pc.paper_comparison({"m": {"table3": t3, "table4": t4, "table6": t6, "table7": t7,
                                    "fig2a": fig2a}})
    assert _row(df, "table4", "domain", "qrnca / boost")["ours_value"] == pytest.approx(
        t4.set_index("op").loc["boost", "pcr"])
    assert _row(df, "table6", "domain", "qrnca / suppress")["ours_value"] == pytest.approx(100.0)
    assert _row(df, "table3", "domain", "biology")["difference"] == pytest.approx(2 - 13.1)
    assert _row(df, "table7", "domain", "biology / prompt_based")["ours_value"] == 0.0
    # One group only: no off-diagonal pair, reported as produced but not a number.
    pair = _row(df, "fig2a", "domain", "highest pair")
    assert pair["ours"] == "none" and pair["status"].startswith("no pair")
    assert math.isnan(_row(df, "fig2a", "domain", "max off-diagonal")["ours_value"])
