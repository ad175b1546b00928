"""The paper's claims on small hand-made tables: each claim holds, does not hold, or is not
produced exactly as its rule says; the paper's own numbers satisfy every rule they can decide;
the module needs no torch."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from qrnca.errors import InputError
from qrnca.outputs import paper_claims as pcl
from qrnca.outputs import paper_values

KINDS = {"dom": "domain", "lang": "language"}


def _claims(tables, kinds=KINDS, model="m"):
    return pcl.evaluate_claims({model: tables}, kinds)


def _one(df, claim, dataset, op=""):
    hit = df[(df["claim"] == claim) & (df["dataset"] == dataset) & (df["op"] == op)]
    assert len(hit) == 1, (claim, dataset, op, df[["claim", "dataset", "op"]])
    row = hit.iloc[0].to_dict()
    row["numbers"] = json.loads(row["numbers"])
    return row


# --------------------------------------------------------------------------------------------
# PCR (Table 4)


def _table4(pcrs, dataset="dom", op="boost", notes=None, n=30):
    notes = notes or {}
    return pd.DataFrame([{"dataset": dataset, "method": m, "op": op, "pcr": v, "n_related": n,
                          "n_unrelated": n, "pcr_average": "ratio_of_means",
                          "note": notes.get(m, "")} for m, v in pcrs.items()])


ALL_OTHERS = {"random": 1.0, "activation": 1.2, "knowledge_neuron": 2.0, "qrnca_no_ica": 2.5,
              "qrnca_with_common": 3.0}


def test_pcr_holds_only_when_strictly_above_every_paper_method():
    df = _claims({"table4": _table4({"qrnca": 3.01, **ALL_OTHERS, "logprob_increase": 50.0})},
                 {"dom": "domain"})
    row = _one(df, "pcr", "dom", "boost")
    assert row["verdict"] == "holds" and row["n"] == 30
    assert row["numbers"]["best_other"] == "qrnca_with_common"
    assert row["numbers"]["best_other_pcr"] == 3.0
    # The log-probability increase is far higher, reported, and does not decide.
    assert row["numbers"]["not_in_paper"] == {"logprob_increase": 50.0}
    assert "logprob_increase (not in the paper, not decisive): 50, QRNCA not above it" in row["note"]
    assert row["paper"] == "QRNCA 4.4 > best other 2.8 (qrnca_with_common)"
    assert "30 related / 30 unrelated prompts" == row["sample"]
    # A tie is not "above"; the method that ties is named.
    tie = _one(_claims({"table4": _table4({"qrnca": 3.0, **ALL_OTHERS})}), "pcr", "dom", "boost")
    assert tie["verdict"] == "does not hold"
    assert tie["note"].startswith("QRNCA not above: qrnca_with_common 3")
    # The op with no rows at all: not produced.
    assert _one(_claims({"table4": _table4({"qrnca": 3.01})}), "pcr", "dom", "suppress")[
        "verdict"] == "not produced"


def test_pcr_not_applicable_nan_and_inf_are_explicit():
    notes = {"knowledge_neuron": "not applicable: no coarse neurons",
             "activation": ""}
    pcrs = {"qrnca": 2.0, "random": 1.0, "activation": math.nan, "knowledge_neuron": math.nan,
            "qrnca_with_common": 1.5}
    row = _one(_claims({"table4": _table4(pcrs, notes=notes)}), "pcr", "dom", "boost")
    assert row["verdict"] == "holds"
    skipped = row["numbers"]["not_compared"]
    assert "qrnca_no_ica not run" in skipped
    assert "knowledge_neuron not applicable: no coarse neurons" in skipped
    assert "activation PCR NaN (0/0)" in skipped
    assert set(row["numbers"]["others"]) == {"random", "qrnca_with_common"}
    # inf (no change on the unrelated prompts) is above any finite PCR, not above another inf.
    inf_row = _one(_claims({"table4": _table4({"qrnca": math.inf, "random": 1e9})}), "pcr", "dom",
                   "boost")
    assert inf_row["verdict"] == "holds" and inf_row["numbers"]["qrnca"] == "inf"
    both = _one(_claims({"table4": _table4({"qrnca": math.inf, "random": math.inf})}), "pcr",
                "dom", "boost")
    assert both["verdict"] == "does not hold"
    # QRNCA NaN, QRNCA missing, nobody to compare with: not produced, with the reason.
    for pcrs, why in (({"qrnca": math.nan, "random": 1.0}, "QRNCA's PCR is NaN"),
                      ({"random": 1.0}, "QRNCA not in Table 4"),
                      ({"qrnca": 2.0, "logprob_increase": 1.0}, "no other method of the paper")):
        row = _one(_claims({"table4": _table4(pcrs)}), "pcr", "dom", "boost")
        assert row["verdict"] == "not produced" and why in row["note"], (pcrs, row["note"])


def test_pcr_from_the_library_table_through_csv(tmp_path):
    """Table 4 as `qrnca.outputs.evaluation_tables.table4` writes it (a not-applicable method, the note
    column), read back from CSV as the workflow does."""
    from qrnca.outputs import evaluation_tables
    from qrnca.neurons.methods import NOT_APPLICABLE

    def rec(qid, group, op, s, p0, p1):
        return {"id": qid, "group": group, "op": op, "set": s, "gold": "A", "p0": p0, "p1": p1,
                "predicted_before": "A", "predicted_after": "A"}

    def records(related, unrelated):
        return [rec("q1", "g1", op, s, 0.5, 0.5 + d) for op in ("boost", "suppress")
                for s, d in (("related", related), ("unrelated", unrelated))]

    results = {("dom", "qrnca"): records(0.2, 0.01), ("dom", "random"): records(0.01, 0.01),
               ("dom", "logprob_increase"): [{NOT_APPLICABLE: "final norm cannot be frozen"}]}
    evaluation_tables.table4(results).to_csv(tmp_path / "t4.csv", index=False)
    t4 = pd.read_csv(tmp_path / "t4.csv")
    row = _one(_claims({"table4": t4}), "pcr", "dom", "suppress")
    assert row["verdict"] == "holds" and row["numbers"]["others"] == {"random": pytest.approx(1.0)}
    assert row["numbers"]["not_in_paper"]["logprob_increase"].startswith("not applicable")
    assert row["n"] == 1  # one related prompt per op


# --------------------------------------------------------------------------------------------
# Overlap (Fig. 2a)


def _matrix(groups, pairs):
    m = pd.DataFrame(1.0, index=groups, columns=groups)
    k = 0
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            m.iloc[i, j] = m.iloc[j, i] = pairs[k]
            k += 1
    return m


def test_overlap_decided_by_the_medians_and_reports_both_ranges():
    # The ranges overlap (0.7 > 0.1), but the domain median 0.5 is above the language 0.3.
    fig = {"dom": _matrix(["a", "b", "c"], [0.1, 0.5, 0.6]),
           "lang": _matrix(["x", "y", "z"], [0.2, 0.3, 0.7])}
    t3 = pd.DataFrame({"dataset": ["dom", "lang"], "group": ["ALL", "ALL"], "queries": [9, 12]})
    row = _one(_claims({"fig2a": fig, "table3": t3}), "overlap", "dom vs lang")
    assert row["verdict"] == "holds" and row["n"] == 3
    assert row["numbers"]["domain"]["median"] == 0.5 and row["numbers"]["language"]["max"] == 0.7
    assert row["ours"] == "dom median 0.5 (0.1–0.6) vs lang median 0.3 (0.2–0.7)"
    assert row["paper"] == "domain 0.35–0.49 > language 0.02–0.13"
    assert row["sample"] == "dom: 3 groups, 3 pairs; 9 queries / lang: 3 groups, 3 pairs; 12 queries"
    # Equal medians: not "more".
    fig["lang"] = _matrix(["x", "y", "z"], [0.5, 0.5, 0.5])
    assert _one(_claims({"fig2a": fig}), "overlap", "dom vs lang")["verdict"] == "does not hold"


def test_overlap_not_produced_without_both_kinds_or_with_one_group():
    fig = {"dom": _matrix(["a", "b"], [0.4]), "lang": _matrix(["x"], [])}
    row = _one(_claims({"fig2a": fig}), "overlap", "dom vs lang")
    assert row["verdict"] == "not produced" and "fewer than 2 groups: lang" in row["note"]
    only = _one(_claims({"fig2a": fig}, {"dom": "domain", "lang": None}), "overlap", "dom")
    assert only["verdict"] == "not produced" and "no language dataset" in only["note"]
    assert _one(_claims({}), "overlap", "—")["verdict"] == "not produced"


def test_dataset_kind_from_the_config_entry():
    assert pcl.dataset_kind({"source": "mmlu"}) == "domain"
    assert pcl.dataset_kind({"source": "mlama"}) == "language"
    assert pcl.dataset_kind({"source": "released", "released_file": "subject_qa.json"}) == "domain"
    assert pcl.dataset_kind({"source": "released", "released_file": "language_qa.json"}) == "language"
    assert pcl.dataset_kind({"source": "jsonl"}) is None


# --------------------------------------------------------------------------------------------
# Layers (Fig. 2b)


def _fig2b(counts, dataset="dom"):
    return pd.DataFrame({"dataset": dataset, "layer": range(len(counts)), "neurons": counts})


def test_thirds_of_the_paper_depth():
    bottom, middle, top = pcl.thirds(32)
    assert (bottom[0], bottom[-1], middle[0], middle[-1], top[0], top[-1]) == (0, 10, 11, 21, 22, 31)
    assert pcl.thirds(3) == [[0], [1], [2]] and pcl.thirds(4) == [[0, 1], [2], [3]]


def test_layers_middle_peak_holds_even_when_the_top_layer_is_busiest():
    counts = [1, 1, 1, 5, 2, 1, 9, 1, 1]  # thirds 0-2 / 3-5 / 6-8
    row = _one(_claims({"fig2b": _fig2b(counts)}, {"dom": None}), "layers", "dom")
    assert row["verdict"] == "holds" and row["n"] == sum(counts)
    nums = row["numbers"]
    assert nums["middle_peak_layer"] == 3 and nums["busiest_layer"] == 6
    assert nums["busiest_third"] == "top"
    assert nums["shares"]["middle"] == pytest.approx(8 / 22)
    assert row["sample"] == "22 QR neurons (with multiplicity) over 9 layers"


@pytest.mark.parametrize("counts, why", [
    ([5, 1, 1, 4, 2, 1, 9, 1, 1], "not above every bottom-third layer"),
    ([4, 4, 4, 4, 4, 4, 4, 4, 4], "not above every bottom-third layer"),
    ([1, 1, 1, 2, 3, 4, 9, 1, 1], "a neighbouring layer holds more"),  # the flank of a top peak
])
def test_layers_does_not_hold(counts, why):
    row = _one(_claims({"fig2b": _fig2b(counts)}, {"dom": None}), "layers", "dom")
    assert row["verdict"] == "does not hold" and why in row["note"]


def test_layers_not_produced():
    for counts, why in (([3, 4], "2 layers: no middle third"), ([0, 0, 0, 0], "no QR neurons")):
        row = _one(_claims({"fig2b": _fig2b(counts)}, {"dom": None}), "layers", "dom")
        assert row["verdict"] == "not produced" and row["note"] == why
    missing = _one(_claims({"fig2b": _fig2b([1, 2, 1])}, {"dom": None, "other": None}), "layers",
                   "other")
    assert missing["verdict"] == "not produced" and "not in the Fig. 2b table" in missing["note"]
    with pytest.raises(InputError, match="layers must be 0..L-1"):
        _claims({"fig2b": _fig2b([1, 2, 1]).iloc[[0, 2]]}, {"dom": None})


# --------------------------------------------------------------------------------------------
# Common neurons' tokens (Table 5)


def _summary(n=4, top_k=10, **counts):
    full = {c: 0 for c in pcl.CATEGORIES}
    full.update(counts)
    full["other"] = n * top_k - sum(v for c, v in full.items() if c != "other")
    return {"common_neurons": n, "clusters": 40, "top_k": top_k, "share_top_layer": 0.75,
            "category_counts": full, "top1_category_counts": {"option_letter": 2}}


def test_common_tokens_quarter_rule_and_an_option_letter():
    # 40 tokens: 1 + 6 + 3 = 10 = exactly a quarter: holds.
    row = _one(_claims({"table5": {"dom": _summary(option_letter=1, stop_word=6, punctuation=3)}},
                       {"dom": None}), "common_tokens", "dom")
    assert row["verdict"] == "holds" and row["n"] == 4
    assert row["numbers"]["function_share"] == pytest.approx(0.25)
    assert row["numbers"]["rank1_function_share"] == pytest.approx(0.5)
    assert row["sample"] == "4 common neurons × top 10 tokens (of 40 clusters)"
    assert "75 % of the common neurons in the top layer" in row["note"]
    # One token fewer: below a quarter.
    below = _one(_claims({"table5": {"dom": _summary(option_letter=1, stop_word=5, punctuation=3,
                                                     month=8)}}, {"dom": None}),
                 "common_tokens", "dom")
    assert below["verdict"] == "does not hold" and "together below 25%" in below["note"]
    # Months do not count; no option letter at all fails even with many stop words.
    none = _one(_claims({"table5": {"dom": _summary(stop_word=30)}}, {"dom": None}),
                "common_tokens", "dom")
    assert none["verdict"] == "does not hold" and "no option letter" in none["note"]


def test_common_tokens_not_produced():
    zero = {"common_neurons": 0, "clusters": 40, "top_k": 0, "category_counts": {}}
    df = _claims({"table5": {"dom": zero, "lang": None}})
    row = _one(df, "common_tokens", "dom")
    assert row["verdict"] == "not produced" and row["n"] == 0
    assert row["note"].startswith("no common neurons")
    assert _one(df, "common_tokens", "lang")["verdict"] == "not produced"
    assert set(_claims({})["verdict"]) == {"not produced"}


def test_categories_match_the_table5_module():
    from qrnca.neurons import vocab_projection

    assert pcl.CATEGORIES == vocab_projection.CATEGORIES


# --------------------------------------------------------------------------------------------
# Editing (Table 6)


def _table6(qrnca, random, op="boost", n=50):
    rows = [{"dataset": "dom", "method": "qrnca", "op": op, "flip_rate": qrnca, "n": n, "note": ""}]
    if random is not None:
        rows.append({"dataset": "dom", "method": "random", "op": op, "flip_rate": random, "n": n,
                     "note": ""})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("qrnca, random, verdict, why", [
    (3.0, 0.3, "holds", ""),  # exactly 10 x and 2.7 pp
    (2.0, 0.0, "holds", ""),  # Random never flips: 2 pp is enough
    (4.9, 0.5, "does not hold", "below 10 × Random"),
    (1.9, 0.0, "does not hold", "less than 2 pp above Random"),
    (0.0, 0.0, "does not hold", "less than 2 pp above Random"),
])
def test_editing_far_above_random(qrnca, random, verdict, why):
    row = _one(_claims({"table6": _table6(qrnca, random)}), "editing", "dom", "boost")
    assert row["verdict"] == verdict and row["note"] == why
    assert row["numbers"]["qrnca"] == qrnca and row["numbers"]["random"] == random
    assert row["n"] == 50 and row["sample"] == "50 related prompts (Random: 50)"
    assert pcl.edit_far_above(qrnca, random) is (verdict == "holds")


def test_editing_not_produced():
    row = _one(_claims({"table6": _table6(10.0, None)}), "editing", "dom", "boost")
    assert row["verdict"] == "not produced" and row["note"] == "not in Table 6: Random"
    nan = _one(_claims({"table6": _table6(math.nan, 0.0)}), "editing", "dom", "boost")
    assert nan["verdict"] == "not produced" and "NaN" in nan["note"]
    assert _one(_claims({}), "editing", "dom")["note"] == "the run has no Table 6"


# --------------------------------------------------------------------------------------------
# The paper's own numbers, the whole frame, writers, no torch


def test_the_papers_own_numbers_satisfy_every_claim_they_can_decide():
    df = pcl.paper_verdicts()
    decided = df[df["claim"] != "common_tokens"]
    assert set(decided["verdict"]) == {"holds"}, decided[["claim", "dataset", "op", "verdict"]]
    assert set(decided["claim"]) == set(pcl.CLAIM_IDS) - {"common_tokens"}
    assert len(decided) == 4 + 1 + 2 + 4  # pcr and editing per dataset x op
    # The paper's numbers themselves, not a summary of them.
    pcr = _one(df, "pcr", "domain", "suppress")
    assert pcr["numbers"]["qrnca"] == paper_values.TABLE4["qrnca"]["domain"]["suppress"]
    assert pcr["n"] == 552 * 3
    edit = _one(df, "editing", "language", "boost")
    assert edit["numbers"]["random"] == 0.3  # the bound "<= 0.3" at its least favourable
    overlap = _one(df, "overlap", "domain vs language")["numbers"]
    assert (overlap["domain"]["min"], overlap["domain"]["max"]) == paper_values.FIG2A["domain"]["range"]
    assert (overlap["language"]["min"], overlap["language"]["max"]) == paper_values.FIG2A["language"]["range"]
    assert overlap["domain"]["median"] == 0.35 and overlap["language"]["median"] == 0.13
    layers = _one(df, "layers", "domain")["numbers"]
    assert layers["busiest_layer"] == paper_values.FIG2B["top_peak_layer"]  # the least favourable
    assert layers["middle_peak_layer"] == paper_values.FIG2B["middle_peak_layers"][0]
    common = df[df["claim"] == "common_tokens"]
    assert set(common["verdict"]) == {"not produced"} and "common_tokens" in pcl.PAPER_GAPS


def test_frame_columns_models_and_bad_input():
    df = pcl.evaluate_claims({"a": {"table6": _table6(3.0, 0.0)}, "b": {}}, {"dom": None})
    assert list(df.columns) == list(pcl.COLUMNS)
    assert list(dict.fromkeys(df["model"])) == ["a", "b"]
    assert set(df["claim"]) == set(pcl.CLAIM_IDS)
    assert set(df[df["model"] == "b"]["verdict"]) == {"not produced"}
    with pytest.raises(InputError, match="unknown tables"):
        pcl.evaluate_claims({"m": {"table7": pd.DataFrame()}})
    with pytest.raises(InputError, match="missing columns"):
        pcl.evaluate_claims({"m": {"table4": pd.DataFrame({"dataset": ["dom"]})}})
    # Without kinds, datasets named domain / language are of those kinds.
    fig = {"domain": _matrix(["a", "b"], [0.4]), "language": _matrix(["x", "y"], [0.1])}
    default = pcl.evaluate_claims({"m": {"fig2a": fig}})
    assert _one(default, "overlap", "domain vs language")["verdict"] == "holds"


def test_markdown_section_and_csv(tmp_path):
    from qrnca.outputs import paper_comparison as pc

    claims = _claims({"table6": _table6(3.0, 0.3), "fig2b": _fig2b([1, 3, 1])}, {"dom": "domain"})
    text = pcl.markdown(claims)
    assert text.startswith("## The paper's claims\n")
    for claim in pcl.CLAIMS:
        assert f"| {claim.id} | {claim.statement} |" in text
    assert "holds in 4 of 4" in text and "not decidable: the paper's Table 5 tokens" in text
    assert ("| editing | m | dom | boost | **holds** | QRNCA 3 % vs Random 0.3 % (10×, +2.7 pp) | "
            "QRNCA 12.6 % vs Random ≤ 0.3 % | 50 related prompts (Random: 50) |  |") in text
    comparison = pc.paper_comparison({"m": {"table6": _table6(3.0, 0.3)}})
    pc.write_markdown(comparison, tmp_path / "cmp.md", appendix=text)
    written = (tmp_path / "cmp.md").read_text(encoding="utf-8")
    assert written == pc.markdown(comparison) + "\n" + text  # the comparison unchanged, then this
    pcl.write_csv(claims, tmp_path / "claims.csv")
    back = pd.read_csv(tmp_path / "claims.csv")
    assert list(back.columns) == list(pcl.COLUMNS) and len(back) == len(claims)
    edit = back[(back["claim"] == "editing") & (back["op"] == "boost")].iloc[0]
    assert edit["n"] == 50 and json.loads(edit["numbers"])["ratio"] == pytest.approx(10.0)
    with pytest.raises(InputError):
        pcl.write_csv(claims.drop(columns="numbers"), tmp_path / "bad.csv")


def test_imports_without_torch():
    code = "import sys, qrnca.outputs.paper_claims; assert 'torch' not in sys.modules, 'torch imported'"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
