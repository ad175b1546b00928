"""Table 7: neuron-based vs prompt-based accuracy per domain, beside the paper (docs/method.md §7),
from the prediction records that `qrnca.evaluation.prediction` writes. Free of torch.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from ..errors import InputError
from . import paper_values

#: Paper dataset whose groups Table 7 reports (MMLU domains).
PAPER_DATASET = "domain"
#: Columns of `table7`, in order.
TABLE7_COLUMNS = ("dataset", "group", "queries", "prompts", "neurons", "neuron_based",
                  "prompt_based", "agreement", "paper_neuron_based", "paper_prompt_based",
                  "diff_neuron_based", "diff_prompt_based")
OVERALL = "ALL"


def _paper_key(dataset: str, paper_datasets: Mapping[str, str | None] | None) -> str | None:
    if paper_datasets is not None:
        return paper_datasets.get(dataset)
    return dataset if dataset == PAPER_DATASET else None


def table7(records: Sequence[Mapping] | pd.DataFrame, paper: Mapping | None = None, *,
           dataset: str = PAPER_DATASET,
           paper_datasets: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Table 7: neuron-based vs prompt-based accuracy per group, beside the paper.

    Columns `TABLE7_COLUMNS`: `queries` / `prompts` held-out counts, `neurons` the domain's neuron
    count, `neuron_based` / `prompt_based` accuracies (share of prompts predicted correctly),
    `agreement` the share of prompts where both decisions pick the same letter, the paper's values
    (`paper`, default `qrnca.outputs.paper_values.TABLE7`) and ours minus the paper's. The paper's values
    are filled in only when `dataset` is the paper's domain dataset (by default a dataset named
    `domain`; `paper_datasets` maps other names, e.g. {"domain-released": "domain"}), so a demo
    world's "biology" is never set beside the paper's. Groups in first-seen order, then `ALL`
    (pooled over prompts; the paper has no overall value)."""
    paper = paper_values.TABLE7 if paper is None else paper
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(list(records))
    needed = {"id", "group", "gold", "neuron_predicted", "prompt_predicted", "n_neurons"}
    missing = needed - set(frame.columns)
    if missing:
        raise InputError(f"prediction records lack fields {sorted(missing)}")
    compared = _paper_key(dataset, paper_datasets) == PAPER_DATASET
    frame = frame.assign(
        neuron_ok=frame["neuron_predicted"] == frame["gold"],
        prompt_ok=frame["prompt_predicted"] == frame["gold"],
        agree=frame["neuron_predicted"] == frame["prompt_predicted"],
    )
    rows = []
    parts = [(g, part) for g, part in frame.groupby("group", sort=False)]
    parts.append((OVERALL, frame))
    for group, part in parts:
        cell = paper.get(group, {}) if compared and group != OVERALL else {}
        pn = cell.get("neuron_based")
        pp = cell.get("prompt_based")
        neurons = part["n_neurons"].iloc[0] if group != OVERALL and len(part) else math.nan
        row = {
            "dataset": dataset, "group": group, "queries": part["id"].nunique(),
            "prompts": len(part), "neurons": neurons,
            "neuron_based": float(part["neuron_ok"].mean()) if len(part) else math.nan,
            "prompt_based": float(part["prompt_ok"].mean()) if len(part) else math.nan,
            "agreement": float(part["agree"].mean()) if len(part) else math.nan,
            "paper_neuron_based": math.nan if pn is None else float(pn),
            "paper_prompt_based": math.nan if pp is None else float(pp),
        }
        row["diff_neuron_based"] = row["neuron_based"] - row["paper_neuron_based"]
        row["diff_prompt_based"] = row["prompt_based"] - row["paper_prompt_based"]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE7_COLUMNS))

