"""The paper's qualitative claims, checked as claims on a run's tables (docs/method.md §8, "The
paper's claims").

`qrnca.outputs.paper_comparison` sets every number of the paper beside ours. This module states each of
the paper's *findings* (what the numbers are meant to show) as a claim with a fixed decision rule,
and decides it for each model and dataset of a run: ``holds``, ``does not hold``, or ``not
produced`` (an input is missing: a table, a method not run, a dataset with fewer than 2 groups, no
common neurons). Every verdict carries the numbers it rests on and its sample size.

The rules, in words (the `Claim.rule` strings say the same; thresholds are module constants):

- **pcr** (Table 4): per dataset and op, QRNCA's PCR is strictly above the PCR of every other
  method of the paper that the run has (`PAPER_BASELINES`: random, activation, knowledge_neuron,
  qrnca_no_ica, qrnca_with_common). A method whose Table 4 row says "not applicable" (`note`), or
  whose PCR is NaN (0/0: it changed no probability), is skipped and named; an infinite PCR
  compares as infinity (inf is not strictly above inf). The log-probability increase (not in the
  paper) is reported beside, never decisive. Not produced: no QRNCA row, QRNCA's PCR NaN, or no
  other paper method left. Sample size: QRNCA's related prompts (and unrelated, in the text).
- **overlap** (Fig. 2a): the median off-diagonal overlap of a domain dataset is strictly above
  that of a language dataset (every domain × language pair of datasets of the model). Both
  ranges stand beside the paper's 0.35–0.49 / 0.02–0.13. Not produced: no dataset of either kind,
  or one with fewer than 2 groups. Sample size: group pairs (the smaller of the two datasets).
- **layers** (Fig. 2b): with layer l in third ⌊3l / L⌋ of L layers (Llama-2's 32: 0–10, 11–21,
  22–31), the busiest layer m of the middle third (lowest on ties) holds strictly more QR neurons
  than every layer of the bottom third and at least as many as each neighbouring layer: the
  middle third has a peak, not just the rising flank of a peak above it. The paper also sees a
  peak near the top (~30), so the overall busiest layer may lie in the top third; it is reported,
  not decisive. Not produced: fewer than 3 layers or no QR neurons. Sample size: QR neurons
  counted with multiplicity over queries (the Fig. 2b histogram).
- **common_tokens** (Table 5): of all the common neurons' top-k tokens, at least
  `FUNCTION_SHARE_MIN` (a quarter) are option letters, stop words or punctuation, and at least one
  is an option letter. These categories are a few percent of a subword vocabulary, so a quarter
  is several times what unrelated directions would give. Months (which the paper also names) and
  the share of common neurons in the top layer are reported, not decisive. Not produced: no
  Table 5 summary, or no common neurons. Sample size: common neurons (× k tokens in the text).
- **editing** (Table 6): per dataset and op, QRNCA's flip rate is at least `EDIT_RATIO_MIN` (10)
  times Random's and at least `EDIT_MARGIN_MIN` (2) percentage points above it. Not produced: no
  QRNCA or Random row, or a NaN rate. Sample size: QRNCA's related prompts.

Which dataset is a *domain* and which a *language* dataset matters for the overlap claim and for
the paper's numbers shown beside ours: `dataset_kind` derives it from a dataset's config entry
(`mmlu` or released `subject_qa.json`: domain; `mlama` or released `language_qa.json`: language;
`jsonl`: neither). Every other claim is decided for every dataset.

`paper_tables` builds the paper's own numbers (`qrnca.outputs.paper_values`) as tables of a run, taking
the least favourable value wherever the paper gives less than a number (Random's flip rate "≤ 0.3"
as 0.3; an overlap matrix whose median sits at the near end of each reported range; a layer
histogram with the paper's peaks at 15–18 and 30, the top one highest); every claim holds on them
except `common_tokens`, for which the paper's tokens are not transcribed (not produced).

Inputs per model, {table name: table} (names `TABLES`, all optional):

| table | what | columns read |
|---|---|---|
| `table3` | Table 3 CSV (queries, only for the sample sizes) | `dataset, group, queries` |
| `table4` | Table 4 CSV | `dataset, method, op, pcr` (optional `n_related, n_unrelated, note, pcr_average`) |
| `table6` | Table 6 CSV | `dataset, method, op, flip_rate` (optional `n, note`) |
| `fig2a` | Fig. 2a CSV (long form) or {dataset: group × group matrix} | `dataset, group_a, group_b` + measure |
| `fig2b` | Fig. 2b CSV | `dataset, layer, neurons` |
| `table5` | {dataset: `qrnca.neurons.vocab_projection.summarize` dict (the Table 5 JSON) or None} | `common_neurons, top_k, category_counts` |

Pure pandas / numpy: no torch, so the comparison job needs no GPU stack.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from . import paper_values
from .paper_comparison import (model_table_items, need_columns, number_or_nan,
                               overlap_matrices)

HOLDS, FAILS, NOT_PRODUCED = "holds", "does not hold", "not produced"
VERDICTS = (HOLDS, FAILS, NOT_PRODUCED)
#: Columns of `evaluate_claims` (and `results/paper_claims.csv`).
COLUMNS = ("claim", "model", "dataset", "op", "verdict", "ours", "paper", "n", "sample",
           "numbers", "note")
TABLES = ("table3", "table4", "table6", "fig2a", "fig2b", "table5")
OPS = ("boost", "suppress")
DOMAIN, LANGUAGE = "domain", "language"

#: The other methods of the paper's Table 4; the log-probability increase is not among them.
PAPER_BASELINES = ("random", "activation", "knowledge_neuron", "qrnca_no_ica", "qrnca_with_common")
EXTRA_METHODS = ("logprob_increase",)
#: Table 5 token categories (the same as `qrnca.neurons.vocab_projection.CATEGORIES`, which needs torch).
CATEGORIES = ("option_letter", "digit", "punctuation", "month", "stop_word", "whitespace",
              "special", "other")
FUNCTION_CATEGORIES = ("option_letter", "stop_word", "punctuation")
FUNCTION_SHARE_MIN = 0.25
EDIT_RATIO_MIN = 10.0
EDIT_MARGIN_MIN = 2.0  # percentage points


@dataclass(frozen=True)
class Claim:
    """One finding of the paper: what it says, the rule that decides it (in words), the tables it
    needs and the function that applies the rule to one model's tables, returning verdict rows."""

    id: str
    statement: str
    rule: str
    tables: tuple[str, ...]
    check: Callable[[Mapping, Mapping[str, str | None], Sequence[str]], list[dict]]


# --------------------------------------------------------------------------------------------
# Helpers


def dataset_kind(spec: Mapping) -> str | None:
    """`domain`, `language` or None for a dataset's config entry (`source`, `released_file`)."""
    source = spec.get("source")
    if source == "mmlu":
        return DOMAIN
    if source == "mlama":
        return LANGUAGE
    if source == "released":
        return {"subject_qa.json": DOMAIN, "language_qa.json": LANGUAGE}.get(spec.get("released_file"))
    return None


def _fmt(value, unit: str = "") -> str:
    value = number_or_nan(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}{unit}"


def _pct(share: float) -> str:
    return "NaN" if share is None or math.isnan(share) else f"{100 * share:.0f} %"


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        obj = float(obj)
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    return obj


def _row(claim: str, dataset: str, verdict: str, *, op: str = "", ours: str = "", paper: str = "",
         n=None, sample: str = "", numbers: Mapping | None = None, note: str = "") -> dict:
    if verdict not in VERDICTS:
        raise AssertionError(verdict)
    return {"claim": claim, "dataset": dataset, "op": op, "verdict": verdict, "ours": ours,
            "paper": paper, "n": math.nan if n is None else int(n), "sample": sample,
            "numbers": json.dumps(_jsonable(numbers or {}), ensure_ascii=False), "note": note}


def _method_rows(frame: pd.DataFrame, kinds: Mapping, datasets: Sequence[str]):
    """(dataset, paper kind, op, {method: table row}) for every dataset and op of Table 4 / 6."""
    for ds in _datasets(list(dict.fromkeys(frame["dataset"].astype(str))), datasets):
        for op in OPS:
            part = frame[(frame["dataset"].astype(str) == ds) & (frame["op"] == op)]
            yield ds, kinds.get(ds), op, {str(r["method"]): r for _, r in part.iterrows()}


def _datasets(found: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """The run's datasets (given order), then any others the table has."""
    return list(dict.fromkeys([*datasets, *found]))


def _not_applicable(row) -> str | None:
    note = row.get("note") if hasattr(row, "get") else None
    if isinstance(note, str) and note.startswith("not applicable"):
        return note
    return None


def _queries(tables: Mapping, dataset: str) -> int | None:
    """All queries of a dataset, from Table 3's `ALL` row (for sample sizes only)."""
    t3 = tables.get("table3")
    if not isinstance(t3, pd.DataFrame) or not {"dataset", "group", "queries"} <= set(t3.columns):
        return None
    hit = t3[(t3["dataset"].astype(str) == dataset) & (t3["group"] == "ALL")]
    return int(hit["queries"].iloc[0]) if len(hit) and not pd.isna(hit["queries"].iloc[0]) else None


def _missing_table(claim: str, table: str, datasets: Sequence[str]) -> list[dict]:
    why = f"the run has no {table}"
    return [_row(claim, ds, NOT_PRODUCED, note=why) for ds in (datasets or ["—"])]


def _per_op(tables, claim: str, table: str, title: str, column: str, kinds, datasets,
            decide) -> list[dict]:
    """A Table 4 / 6 claim's rows: `decide(frame, dataset, kind, op, {method: row})` for every
    dataset and op of the table, or the rows saying that the run has no such table."""
    found = tables.get(table)
    if found is None:
        return _missing_table(claim, title, datasets)
    frame = need_columns(found, ("dataset", "method", "op", column), table)
    return [decide(frame, ds, kind, op, by_method)
            for ds, kind, op, by_method in _method_rows(frame, kinds, datasets)]


# --------------------------------------------------------------------------------------------
# PCR (Table 4)


def _paper_pcr(kind: str | None, op: str) -> str:
    if kind not in (DOMAIN, LANGUAGE):
        return "—"
    cells = {m: paper_values.TABLE4[m][kind][op] for m in PAPER_BASELINES}
    best = max(cells, key=cells.get)
    return f"QRNCA {paper_values.TABLE4['qrnca'][kind][op]:g} > best other {cells[best]:g} ({best})"


def _check_pcr(tables, kinds, datasets):
    return _per_op(tables, "pcr", "table4", "Table 4", "pcr", kinds, datasets, _pcr_row)


def _pcr_row(frame, ds, kind, op, by_method) -> dict:
    """The verdict of the PCR claim for one dataset and op of Table 4."""
    paper = _paper_pcr(kind, op)
    q = by_method.get("qrnca")
    if q is None or _not_applicable(q):
        why = "QRNCA not in Table 4" if q is None else f"QRNCA {_not_applicable(q)}"
        return _row("pcr", ds, NOT_PRODUCED, op=op, paper=paper, note=why)
    qv = number_or_nan(q["pcr"])
    n_rel, n_unrel = number_or_nan(q.get("n_related")), number_or_nan(q.get("n_unrelated"))
    n = None if math.isnan(n_rel) else n_rel
    sample = (f"{n_rel:.0f} related / {n_unrel:.0f} unrelated prompts"
              if n is not None else "prompts not given")
    compared, skipped = {}, []
    for m in PAPER_BASELINES:
        r = by_method.get(m)
        if r is None:
            skipped.append(f"{m} not run")
        elif _not_applicable(r):
            skipped.append(f"{m} {_not_applicable(r)}")
        elif math.isnan(number_or_nan(r["pcr"])):
            skipped.append(f"{m} PCR NaN (0/0)")
        else:
            compared[m] = number_or_nan(r["pcr"])
    extra = {}
    for m in EXTRA_METHODS:
        r = by_method.get(m)
        if r is not None:
            extra[m] = _not_applicable(r) or number_or_nan(r["pcr"])
    numbers = {"qrnca": qv, "others": compared, "not_compared": skipped,
               "not_in_paper": extra}
    if "pcr_average" in frame.columns:
        numbers["pcr_average"] = str(q.get("pcr_average"))
    notes = []
    if skipped:
        notes.append("skipped: " + "; ".join(skipped))
    for m, v in extra.items():
        if isinstance(v, str):
            notes.append(f"{m} (not in the paper): {v}")
        else:
            side = "above" if qv > v else "not above"
            notes.append(f"{m} (not in the paper, not decisive): {_fmt(v)}, QRNCA {side} it")
    if numbers.get("pcr_average") not in (None, "ratio_of_means", "nan"):
        notes.append(f"pcr_average={numbers['pcr_average']} (the paper: ratio of means)")
    if math.isnan(qv):
        return _row("pcr", ds, NOT_PRODUCED, op=op, ours="QRNCA NaN", paper=paper, n=n,
                    sample=sample, numbers=numbers,
                    note="; ".join(["QRNCA's PCR is NaN (0/0)", *notes]))
    if not compared:
        return _row("pcr", ds, NOT_PRODUCED, op=op, ours=f"QRNCA {_fmt(qv)}",
                    paper=paper, n=n, sample=sample, numbers=numbers,
                    note="; ".join(["no other method of the paper to compare", *notes]))
    best = max(compared, key=lambda m: compared[m])
    numbers.update(best_other=best, best_other_pcr=compared[best])
    beaten_by = [f"{m} {_fmt(v)}" for m, v in compared.items() if not qv > v]
    if beaten_by:
        notes.insert(0, "QRNCA not above: " + ", ".join(beaten_by))
    verdict = FAILS if beaten_by else HOLDS
    ours = f"QRNCA {_fmt(qv)} vs best other {_fmt(compared[best])} ({best})"
    return _row("pcr", ds, verdict, op=op, ours=ours, paper=paper, n=n,
                sample=sample, numbers=numbers, note="; ".join(notes))


# --------------------------------------------------------------------------------------------
# Overlap (Fig. 2a)


def _offdiagonal(matrix: pd.DataFrame) -> np.ndarray:
    groups = list(matrix.index)
    values = matrix.reindex(columns=groups).to_numpy(dtype=float)
    return np.array([values[i, j] for i in range(len(groups)) for j in range(i + 1, len(groups))])


def _overlap_summary(matrix: pd.DataFrame, measure: str, ds: str, queries: int | None) -> dict:
    pairs = _offdiagonal(matrix)
    out = {"dataset": ds, "measure": measure, "groups": len(matrix.index), "pairs": len(pairs),
           "queries": queries}
    if len(pairs):
        out.update(min=float(pairs.min()), median=float(np.median(pairs)), max=float(pairs.max()))
    return out


def _paper_overlap() -> str:
    d, l = paper_values.FIG2A[DOMAIN]["range"], paper_values.FIG2A[LANGUAGE]["range"]
    return f"domain {d[0]:g}–{d[1]:g} > language {l[0]:g}–{l[1]:g}"


def _describe_overlap(s: dict) -> str:
    return f"{s['dataset']} median {_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"


def _size_overlap(s: dict) -> str:
    q = f"; {s['queries']} queries" if s.get("queries") is not None else ""
    return f"{s['dataset']}: {s['groups']} groups, {s['pairs']} pairs{q}"


def _check_overlap(tables, kinds, datasets):
    fig = tables.get("fig2a")
    paper = _paper_overlap()
    if fig is None:
        return [_row("overlap", "—", NOT_PRODUCED, paper=paper, note="the run has no Fig. 2a table")]
    matrices = overlap_matrices(fig, "fig2a")
    names = _datasets(list(matrices), datasets)
    domains = [ds for ds in names if kinds.get(ds) == DOMAIN]
    languages = [ds for ds in names if kinds.get(ds) == LANGUAGE]
    if not domains or not languages:
        lacking = " and ".join(k for k, have in ((DOMAIN, domains), (LANGUAGE, languages)) if not have)
        label = " vs ".join(domains + languages) or "—"
        return [_row("overlap", label, NOT_PRODUCED, paper=paper,
                     note=f"no {lacking} dataset in the run (domain: MMLU or subject_qa.json; "
                          "language: mLAMA or language_qa.json)")]
    rows = []
    for d in domains:
        for l in languages:
            label = f"{d} vs {l}"
            missing = [ds for ds in (d, l) if ds not in matrices]
            if missing:
                rows.append(_row("overlap", label, NOT_PRODUCED, paper=paper,
                                 note=f"not in the Fig. 2a table: {', '.join(missing)}"))
                continue
            sd = _overlap_summary(*matrices[d], d, _queries(tables, d))
            sl = _overlap_summary(*matrices[l], l, _queries(tables, l))
            numbers = {DOMAIN: sd, LANGUAGE: sl}
            sample = f"{_size_overlap(sd)} / {_size_overlap(sl)}"
            few = [s["dataset"] for s in (sd, sl) if s["pairs"] == 0]
            if few:
                rows.append(_row("overlap", label, NOT_PRODUCED, paper=paper, n=0, sample=sample,
                                 numbers=numbers,
                                 note=f"fewer than 2 groups: {', '.join(few)} (no pair to compare)"))
                continue
            note = f"measure: {sd['measure']}"
            if sl["measure"] != sd["measure"]:
                note += f" / {sl['measure']}"
            verdict = HOLDS if sd["median"] > sl["median"] else FAILS
            rows.append(_row("overlap", label, verdict,
                             ours=f"{_describe_overlap(sd)} vs {_describe_overlap(sl)}",
                             paper=paper, n=min(sd["pairs"], sl["pairs"]), sample=sample,
                             numbers=numbers, note=note))
    return rows


# --------------------------------------------------------------------------------------------
# Layers (Fig. 2b)


def thirds(n_layers: int) -> list[list[int]]:
    """Layers of the bottom, middle and top third of the depth: layer l is in third ⌊3l / L⌋."""
    out = [[], [], []]
    for layer in range(n_layers):
        out[3 * layer // n_layers].append(layer)
    return out


def _span(layers: list[int]) -> str:
    return f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else str(layers[0])


def layer_peak(counts: Sequence[float]) -> dict:
    """The layers claim on one histogram (QR neurons per layer 0..L-1, L >= 3): the verdict's
    numbers, with `holds` True / False (module docstring)."""
    counts = np.asarray(counts, dtype=float)
    n_layers = len(counts)
    if n_layers < 3:
        raise InputError(f"need at least 3 layers for thirds, got {n_layers}")
    bottom, middle, top = thirds(n_layers)
    total = float(counts.sum())
    m = middle[int(np.argmax(counts[middle]))]
    busiest = int(np.argmax(counts))
    above_bottom = bool(counts[m] > counts[bottom].max())
    local_peak = bool(counts[m] >= counts[m - 1] and counts[m] >= counts[m + 1])
    return {
        "n_layers": n_layers, "total": total,
        "thirds": {"bottom": _span(bottom), "middle": _span(middle), "top": _span(top)},
        "shares": {name: (float(counts[part].sum()) / total if total else math.nan)
                   for name, part in zip(("bottom", "middle", "top"), (bottom, middle, top))},
        "middle_peak_layer": m, "middle_peak_count": float(counts[m]),
        "bottom_max": float(counts[bottom].max()),
        "neighbours": [float(counts[m - 1]), float(counts[m + 1])],
        "busiest_layer": busiest, "busiest_count": float(counts[busiest]),
        "busiest_third": ("bottom", "middle", "top")[3 * busiest // n_layers],
        "above_bottom": above_bottom, "local_peak": local_peak,
        "holds": above_bottom and local_peak,
    }


def _paper_layers() -> str:
    f = paper_values.FIG2B
    lo, hi = f["middle_peak_layers"]
    return f"peaks at layers {lo}–{hi} (middle third) and ~{f['top_peak_layer']} of {f['n_layers']}"


def _check_layers(tables, kinds, datasets):
    fig = tables.get("fig2b")
    paper = _paper_layers()
    if fig is None:
        return [_row("layers", ds, NOT_PRODUCED, paper=paper, note="the run has no Fig. 2b table")
                for ds in (datasets or ["—"])]
    frame = need_columns(fig, ("dataset", "layer", "neurons"), "fig2b")
    rows = []
    for ds in _datasets(list(dict.fromkeys(frame["dataset"].astype(str))), datasets):
        part = frame[frame["dataset"].astype(str) == ds].sort_values("layer")
        if part.empty:
            rows.append(_row("layers", ds, NOT_PRODUCED, paper=paper,
                             note="not in the Fig. 2b table"))
            continue
        layers = [int(x) for x in part["layer"]]
        if layers != list(range(len(layers))):
            raise InputError(f"fig2b [{ds}]: layers must be 0..L-1 once each, got {layers}")
        counts = part["neurons"].to_numpy(dtype=float)
        total = int(counts.sum())
        queries = _queries(tables, ds)
        sample = f"{total} QR neurons (with multiplicity) over {len(layers)} layers" + (
            f", {queries} queries" if queries is not None else "")
        if len(layers) < 3:
            rows.append(_row("layers", ds, NOT_PRODUCED, paper=paper, n=total, sample=sample,
                             note=f"{len(layers)} layers: no middle third"))
            continue
        if total == 0:
            rows.append(_row("layers", ds, NOT_PRODUCED, paper=paper, n=0, sample=sample,
                             note="no QR neurons"))
            continue
        peak = layer_peak(counts)
        sh = peak["shares"]
        ours = (f"middle peak layer {peak['middle_peak_layer']} ({peak['middle_peak_count']:.0f}; "
                f"bottom max {peak['bottom_max']:.0f}, neighbours "
                f"{peak['neighbours'][0]:.0f}/{peak['neighbours'][1]:.0f}); thirds "
                f"{_pct(sh['bottom'])} / {_pct(sh['middle'])} / {_pct(sh['top'])}; busiest layer "
                f"{peak['busiest_layer']} ({peak['busiest_third']} third)")
        note = (f"thirds: layers {peak['thirds']['bottom']} / {peak['thirds']['middle']} / "
                f"{peak['thirds']['top']}")
        failed = [why for ok, why in ((peak["above_bottom"], "not above every bottom-third layer"),
                                      (peak["local_peak"], "a neighbouring layer holds more"))
                  if not ok]
        if failed:
            note += "; " + "; ".join(failed)
        verdict = HOLDS if peak.pop("holds") else FAILS
        rows.append(_row("layers", ds, verdict, ours=ours, paper=paper, n=total, sample=sample,
                         numbers=peak, note=note))
    return rows


# --------------------------------------------------------------------------------------------
# Common neurons' tokens (Table 5)


_PAPER_COMMON = "option letters, stop words, months, punctuation; mostly in the top layer"


def _check_common(tables, kinds, datasets):
    summaries = tables.get("table5")
    if summaries is None:
        return [_row("common_tokens", ds, NOT_PRODUCED, paper=_PAPER_COMMON,
                     note="the run has no Table 5 summary") for ds in (datasets or ["—"])]
    if not isinstance(summaries, Mapping):
        raise InputError("table5: expected {dataset: Table 5 summary (dict) or None}")
    rows = []
    for ds in _datasets(list(summaries), datasets):
        summary = summaries.get(ds)
        if summary is None:
            rows.append(_row("common_tokens", ds, NOT_PRODUCED, paper=_PAPER_COMMON,
                             note="no Table 5 summary for this dataset"))
            continue
        if not isinstance(summary, Mapping) or "common_neurons" not in summary:
            raise InputError(f"table5 [{ds}]: not a Table 5 summary (no 'common_neurons')")
        n = int(summary["common_neurons"])
        clusters = summary.get("clusters")
        top_k = int(summary.get("top_k") or 0)
        sample = f"{n} common neurons × top {top_k} tokens" + (
            f" (of {clusters} clusters)" if clusters is not None else "")
        if n == 0:
            rows.append(_row("common_tokens", ds, NOT_PRODUCED, paper=_PAPER_COMMON, n=0,
                             sample=sample, numbers={"common_neurons": 0, "clusters": clusters},
                             note="no common neurons (none in more than int(u·|C|) clusters)"))
            continue
        counts = {c: int((summary.get("category_counts") or {}).get(c, 0)) for c in CATEGORIES}
        tokens = sum(counts.values())
        shares = {c: counts[c] / tokens if tokens else math.nan for c in CATEGORIES}
        function_share = sum(shares[c] for c in FUNCTION_CATEGORIES)
        top1 = {c: int((summary.get("top1_category_counts") or {}).get(c, 0)) for c in CATEGORIES}
        top1_function = sum(top1[c] for c in FUNCTION_CATEGORIES) / n
        numbers = {"common_neurons": n, "clusters": clusters, "top_k": top_k, "tokens": tokens,
                   "category_shares": shares, "function_share": function_share,
                   "rank1_function_share": top1_function,
                   "share_top_layer": summary.get("share_top_layer")}
        ours = (f"option letters {_pct(shares['option_letter'])}, stop words "
                f"{_pct(shares['stop_word'])}, punctuation {_pct(shares['punctuation'])} "
                f"(together {_pct(function_share)}) of {tokens} top tokens; months "
                f"{_pct(shares['month'])}; rank-1 token one of them for {_pct(top1_function)}")
        top_layer = summary.get("share_top_layer")
        note = "" if top_layer is None else f"{_pct(top_layer)} of the common neurons in the top layer"
        failed = []
        if not function_share >= FUNCTION_SHARE_MIN:
            failed.append(f"together below {FUNCTION_SHARE_MIN:.0%}")
        if counts["option_letter"] < 1:
            failed.append("no option letter")
        verdict = FAILS if failed else HOLDS
        note = "; ".join(x for x in (note, *failed) if x)
        rows.append(_row("common_tokens", ds, verdict, ours=ours, paper=_PAPER_COMMON, n=n,
                         sample=sample, numbers=numbers, note=note))
    return rows


# --------------------------------------------------------------------------------------------
# Editing (Table 6)


def _paper_editing(kind: str | None, op: str) -> str:
    if kind not in (DOMAIN, LANGUAGE):
        return "—"
    q = paper_values.TABLE6["qrnca"][kind][op]["value"]
    r = paper_values.TABLE6["random"][kind][op]
    rand = f"{r['value']:g} %" if r["value"] is not None else f"≤ {r['upper_bound']:g} %"
    return f"QRNCA {q:g} % vs Random {rand}"


def edit_far_above(qrnca_rate: float, random_rate: float) -> bool:
    """QRNCA's flip rate (percent) is at least EDIT_RATIO_MIN × Random's and EDIT_MARGIN_MIN
    percentage points above it."""
    return qrnca_rate >= EDIT_RATIO_MIN * random_rate and qrnca_rate - random_rate >= EDIT_MARGIN_MIN


def _check_editing(tables, kinds, datasets):
    return _per_op(tables, "editing", "table6", "Table 6", "flip_rate", kinds, datasets,
                   _editing_row)


def _editing_row(frame, ds, kind, op, by_method) -> dict:
    """The verdict of the editing claim for one dataset and op of Table 6."""
    paper = _paper_editing(kind, op)
    q, r = by_method.get("qrnca"), by_method.get("random")
    lacking = [name for name, row in (("QRNCA", q), ("Random", r))
               if row is None or _not_applicable(row)]
    if lacking:
        return _row("editing", ds, NOT_PRODUCED, op=op, paper=paper,
                    note=f"not in Table 6: {', '.join(lacking)}")
    qv, rv = number_or_nan(q["flip_rate"]), number_or_nan(r["flip_rate"])
    nq, nr = number_or_nan(q.get("n")), number_or_nan(r.get("n"))
    n = None if math.isnan(nq) else nq
    sample = (f"{nq:.0f} related prompts (Random: {nr:.0f})" if n is not None
              else "prompts not given")
    ratio = qv / rv if rv else (math.inf if qv > 0 else math.nan)
    numbers = {"qrnca": qv, "random": rv, "ratio": ratio, "margin_pp": qv - rv,
               "n_qrnca": nq, "n_random": nr}
    if math.isnan(qv) or math.isnan(rv):
        return _row("editing", ds, NOT_PRODUCED, op=op, paper=paper, n=n, sample=sample,
                    numbers=numbers, note="a flip rate is NaN (no related prompts)")
    failed = []
    if not qv >= EDIT_RATIO_MIN * rv:
        failed.append(f"below {EDIT_RATIO_MIN:g} × Random")
    if not qv - rv >= EDIT_MARGIN_MIN:
        failed.append(f"less than {EDIT_MARGIN_MIN:g} pp above Random")
    verdict = HOLDS if edit_far_above(qv, rv) else FAILS
    times = "ratio 0/0" if math.isnan(ratio) else f"{_fmt(ratio)}×"
    ours = f"QRNCA {_fmt(qv)} % vs Random {_fmt(rv)} % ({times}, {qv - rv:+.3g} pp)"
    return _row("editing", ds, verdict, op=op, ours=ours, paper=paper, n=n,
                sample=sample, numbers=numbers, note="; ".join(failed))


# --------------------------------------------------------------------------------------------
# The claims


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "pcr",
        "QRNCA's PCR is above every baseline and ablation (Table 4).",
        "Per dataset and op: QRNCA's PCR is strictly above the PCR of every other method of the "
        "paper that the run has (random, activation, knowledge_neuron, qrnca_no_ica, "
        "qrnca_with_common); methods not applicable or with NaN PCR are skipped and named; the "
        "log-probability increase (not in the paper) is reported, not decisive.",
        ("table4",), _check_pcr),
    Claim(
        "overlap",
        "Domain groups share more QR neurons (0.35–0.49) than language groups (0.02–0.13) (Fig. 2a).",
        "The median off-diagonal overlap of the domain dataset is strictly above that of the "
        "language dataset (same measure); both ranges are reported.",
        ("fig2a",), _check_overlap),
    Claim(
        "layers",
        "QR neurons peak in the middle layers (Fig. 2b).",
        "With layer l of L in third ⌊3l/L⌋, the middle third's busiest layer (lowest on ties) "
        "holds strictly more QR neurons than every bottom-third layer and at least as many as "
        "both neighbouring layers; the overall busiest layer (the paper also sees a top peak) "
        "and the share per third are reported, not decisive.",
        ("fig2b",), _check_layers),
    Claim(
        "common_tokens",
        "Common neurons project to option letters and function words (Table 5).",
        f"At least {FUNCTION_SHARE_MIN:.0%} of all common neurons' top-k tokens are option "
        "letters, stop words or punctuation, and at least one is an option letter; 0 common "
        "neurons: not produced.",
        ("table5",), _check_common),
    Claim(
        "editing",
        "Editing QR neurons flips predictions far more often than editing random neurons (Table 6).",
        f"Per dataset and op: QRNCA's flip rate is at least {EDIT_RATIO_MIN:g} × Random's and "
        f"at least {EDIT_MARGIN_MIN:g} percentage points above it.",
        ("table6",), _check_editing),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)
#: Claims the paper's numbers cannot decide, and why (`paper_tables` has no input for them).
PAPER_GAPS = {"common_tokens": "the paper's Table 5 tokens are not transcribed in "
                               "qrnca/outputs/paper_values.py"}


def default_kinds(datasets: Sequence[str]) -> dict[str, str | None]:
    """A dataset named `domain` or `language` is of that kind; any other is neither."""
    return {ds: ds if ds in (DOMAIN, LANGUAGE) else None for ds in datasets}


def evaluate_claims(model_tables: Mapping[str, Mapping[str, object]],
                    dataset_kinds: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Every claim of `CLAIMS` for every model: one row per (claim, model, dataset[, op]).

    `model_tables`: {model: {table name: table}} (module docstring; any table may be absent,
    and then its claims are `not produced`). `dataset_kinds`: {dataset: `domain` / `language` /
    None} in the run's dataset order (`dataset_kind` of each config entry); its datasets are all
    reported even where a table lacks them. Default: `default_kinds` of the datasets found."""
    rows = []
    for model, tables in model_table_items(model_tables, TABLES):
        tables = {k: v for k, v in tables.items() if v is not None}
        if dataset_kinds is None:
            found = []
            for name in ("table4", "table6", "fig2b"):
                if isinstance(tables.get(name), pd.DataFrame) and "dataset" in tables[name]:
                    found += list(tables[name]["dataset"].astype(str))
            if isinstance(tables.get("table5"), Mapping):
                found += list(tables["table5"])
            if "fig2a" in tables:
                found += list(overlap_matrices(tables["fig2a"], "fig2a"))
            kinds = default_kinds(list(dict.fromkeys(found)))
            datasets: list[str] = []
        else:
            kinds = dict(dataset_kinds)
            datasets = list(kinds)
        for claim in CLAIMS:
            for row in claim.check(tables, kinds, datasets):
                rows.append({**row, "model": model})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["n"] = frame["n"].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------
# The paper's own numbers, as tables of a run


def paper_tables() -> dict[str, object]:
    """The paper's numbers (`qrnca.outputs.paper_values`) as one model's tables, datasets `domain` and
    `language`, the least favourable value taken wherever the paper gives less than a number
    (module docstring). No Table 5: the paper's tokens are not transcribed."""
    prompts = {ds: q * paper_values.PROMPTS_PER_QUERY for ds, q in paper_values.QUERIES.items()}
    t4 = pd.DataFrame([
        {"dataset": ds, "method": m, "op": op, "pcr": cells[ds][op], "n_related": prompts[ds],
         "n_unrelated": prompts[ds], "note": ""}
        for ds in (DOMAIN, LANGUAGE) for m, cells in paper_values.TABLE4.items() for op in OPS])
    t6 = pd.DataFrame([
        {"dataset": ds, "method": m, "op": op, "n": prompts[ds],
         "flip_rate": cell["value"] if cell["value"] is not None else cell["upper_bound"]}
        for ds in (DOMAIN, LANGUAGE) for m, cells in paper_values.TABLE6.items()
        for op, cell in cells[ds].items()])
    fig2a = {}
    for ds, groups in ((DOMAIN, paper_values.DOMAINS), (LANGUAGE, paper_values.LANGUAGES)):
        low, high = paper_values.FIG2A[ds]["range"]
        # Domains: every pair at the low end but the highest pair (median = low end);
        # languages: every pair at the high end but one (median = high end).
        base, other = (low, high) if ds == DOMAIN else (high, low)
        matrix = pd.DataFrame(base, index=list(groups), columns=list(groups))
        a, b = paper_values.FIG2A[ds]["highest_pair"] if ds == DOMAIN else groups[:2]
        matrix.loc[a, b] = matrix.loc[b, a] = other
        for g in groups:
            matrix.loc[g, g] = 1.0
        fig2a[ds] = matrix
    f = paper_values.FIG2B
    counts = np.ones(f["n_layers"])
    lo, hi = f["middle_peak_layers"]
    counts[lo:hi + 1] = 2
    counts[f["top_peak_layer"]] = 3  # the top peak the highest: the least favourable case
    fig2b = pd.concat([pd.DataFrame({"dataset": ds, "layer": np.arange(f["n_layers"]),
                                     "neurons": counts}) for ds in (DOMAIN, LANGUAGE)],
                      ignore_index=True)
    t3 = pd.DataFrame([{"dataset": ds, "group": "ALL", "queries": q}
                       for ds, q in paper_values.QUERIES.items()])
    return {"table3": t3, "table4": t4, "table6": t6, "fig2a": fig2a, "fig2b": fig2b}


def paper_verdicts() -> pd.DataFrame:
    """`evaluate_claims` on `paper_tables()` (model `paper_values.MODEL`)."""
    return evaluate_claims({paper_values.MODEL: paper_tables()},
                           {DOMAIN: DOMAIN, LANGUAGE: LANGUAGE})


# --------------------------------------------------------------------------------------------
# Writers


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _tally(part: pd.DataFrame) -> str:
    counts = part["verdict"].value_counts()
    return ", ".join(f"{v} in {counts[v]} of {len(part)}" for v in VERDICTS if v in counts)


def markdown(claims: pd.DataFrame, paper: pd.DataFrame | None = None) -> str:
    """The section "The paper's claims" of `results/paper_comparison.md`: the claims and their
    rules (with the verdicts of the same rules on the paper's own numbers, `paper_verdicts`),
    then one table claim × model × dataset (× op)."""
    need_columns(claims, COLUMNS, "paper claims")
    paper = paper_verdicts() if paper is None else paper
    lines = [
        "## The paper's claims",
        "",
        "Each qualitative finding of the paper, decided by a fixed rule on this run's tables for "
        "every model and dataset: **holds**, **does not hold**, or **not produced** (an input "
        "missing, e.g. a method not run, a dataset with fewer than 2 groups, no common neurons). "
        "The rules are in docs/method.md §8 (\"The paper's claims\"). The last column applies the "
        "same rule to the paper's own numbers (Llama-2-7B-chat), taking the least favourable value "
        "where the paper gives only a bound, a range or peak positions.",
        "",
        "| claim | the paper says | rule | the paper's numbers, same rule |",
        "|---|---|---|---|",
    ]
    for c in CLAIMS:
        part = paper[paper["claim"] == c.id]
        if set(part["verdict"]) == {NOT_PRODUCED}:
            mine = "not decidable: " + PAPER_GAPS.get(c.id, "; ".join(sorted(set(part["note"]))))
        else:
            mine = _tally(part)
        lines.append(f"| {c.id} | {_cell(c.statement)} | {_cell(c.rule)} | {_cell(mine)} |")
    lines += ["", f"Verdicts of this run: {_tally(claims) or 'none'} (rows below).", ""]
    columns = ["claim", "model", "dataset", "op", "verdict", "ours", "paper", "sample", "note"]
    header = ["claim", "model", "dataset", "op", "verdict", "ours", "paper", "sample size", "note"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in claims.iterrows():
        cells = [_cell(r[c]) for c in columns]
        cells[4] = f"**{cells[4]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(claims: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the verdicts as CSV atomically (`numbers` as a JSON object per row)."""
    need_columns(claims, COLUMNS, "paper claims")
    io.write_csv(path, claims)


def read_summary(path: str | os.PathLike) -> dict:
    """A Table 5 summary JSON (`qrnca.neurons.vocab_projection.write_summary`)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
