"""Evaluation of neuron sets by intervention: probability change ratio (Table 4) and knowledge
editing flips (Table 6), docs/method.md §6-§7.

For every query and every neuron method, the query's neurons are boosted (x 2) and suppressed
(x 0) at the last position of (a) its own three prompts (*related*) and (b) a control group of
prompts drawn from queries of OTHER groups (*unrelated*). Each prompt's gold-letter probability
before (p0) and after (p1) is recorded, with the predicted letter (argmax over A-D) before and
after.

The work is organised per PROMPT: every (method, query, op) row that touches a prompt is collected
first, so each prompt's prefix is computed once for all methods and evaluated as one batch of
single-token rows (`qrnca.evaluation.interventions.SharedPrefix`).

Decisions (config options, written to `evaluation/settings.json` beside the records):
- `unrelated_prompts` (default 3, the related count): unrelated prompts per query, drawn uniformly
  without replacement from the prompts of all queries of other groups (pool sorted by query id and
  prompt index), seeded per (seed, query id) through a hash, so a query's draw does not depend on
  file order or processing order, and is the same for every method (paired comparison).
- `unrelated_draws` (default 1): multiplier on that count (a larger control group).
- `pcr_average` (default `ratio_of_means`): change = mean(p1 - p0) / mean(p0) over the prompts, as
  in Dai et al.'s evaluation code; `mean_of_ratios`: mean((p1 - p0) / p0).

The records are read and checked by `qrnca.evaluation.records`, and Tables 4 / 6 built from them
by `qrnca.outputs.evaluation_tables` (both free of torch).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..datasets.render import derive_rng
from ..errors import InputError
from ..io import write_json, write_jsonl
from ..models.loading import PromptEncoding
from ..neurons import methods
from .interventions import CLEAN, Edit, SharedPrefix
from .records import OPS, PCR_AVERAGES, SETS, check_finite

SETTINGS_FILE = "settings.json"
#: Settings the evaluation records depend on (`settings.json`); `chunk_size` only changes how the
#: rows are batched and `pcr_average` only how Tables 4 and Figs. 3/4 average them.
RESULT_SETTINGS = ("unrelated_prompts", "unrelated_draws", "seed", "ops")
#: Run statistics that depend on the machine or the chunk size: provenance, not settings.json.
TIMING_STATS = ("seconds", "seconds_per_prompt")
EXECUTION_STATS = ("single_token_passes",) + TIMING_STATS

Neuron = tuple[int, int]


@dataclass(frozen=True)
class EvaluationSettings:
    """The decisions of an evaluation run (module docstring)."""

    unrelated_prompts: int = 3
    unrelated_draws: int = 1
    seed: int = 0
    ops: tuple[str, ...] = ("boost", "suppress")
    chunk_size: int = 64
    pcr_average: str = "ratio_of_means"

    def __post_init__(self):
        if self.unrelated_prompts < 1 or self.unrelated_draws < 1:
            raise InputError(f"unrelated_prompts ({self.unrelated_prompts}) and unrelated_draws "
                             f"({self.unrelated_draws}) must be >= 1")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise InputError(f"ops must be a non-empty subset of {sorted(OPS)}, got {self.ops!r}")
        if self.pcr_average not in PCR_AVERAGES:
            raise InputError(f"pcr_average must be one of {PCR_AVERAGES}, got {self.pcr_average!r}")
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        object.__setattr__(self, "ops", tuple(self.ops))

    @classmethod
    def from_config(cls, config: Mapping | None) -> "EvaluationSettings":
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown evaluation settings {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**config)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ops"] = list(self.ops)
        out["factors"] = {op: OPS[op] for op in self.ops}
        return out

    def result_dict(self) -> dict:
        """The settings the records depend on (`RESULT_SETTINGS`), with the factors."""
        full = self.as_dict()
        return {**{k: full[k] for k in RESULT_SETTINGS}, "factors": full["factors"]}


# --------------------------------------------------------------------------------------------
# Inputs


def neuron_sets(records: Sequence[Mapping], queries: Sequence[Mapping],
                source: str = "neurons") -> dict[str, tuple[Neuron, ...]]:
    """{query id: neurons} from a neurons file's records, checked against the dataset: every query
    exactly once, no unknown ids, groups equal, neurons as [layer, index] integer pairs."""
    groups = {q["id"]: q["group"] for q in queries}
    out: dict[str, tuple[Neuron, ...]] = {}
    for row, record in enumerate(records, start=1):
        qid = record.get("id") if isinstance(record, Mapping) else None
        where = f"{source}, row {row} (id {qid!r})"
        if qid not in groups:
            raise InputError(f"{where}: query id not in the dataset")
        if qid in out:
            raise InputError(f"{where}: duplicate query id")
        if record.get("group") != groups[qid]:
            raise InputError(f"{where}: group {record.get('group')!r} differs from the dataset's "
                             f"{groups[qid]!r}")
        neurons = record.get("neurons")
        if not isinstance(neurons, list) or not all(
                isinstance(n, (list, tuple)) and len(n) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in n) for n in neurons):
            raise InputError(f"{where}: 'neurons' must be a list of [layer, index] integer pairs")
        out[qid] = tuple((n[0], n[1]) for n in neurons)
    missing = [qid for qid in groups if qid not in out]
    if missing:
        raise InputError(f"{source}: {len(missing)} dataset queries have no neuron record, "
                         f"e.g. {missing[:3]}")
    return out


def unrelated_prompts(query: Mapping, queries: Sequence[Mapping],
                      settings: EvaluationSettings) -> list[tuple[str, int]]:
    """The control prompts of `query`: (query id, prompt index) pairs drawn uniformly without
    replacement from the prompts of queries of other groups (sorted by id, prompt index), seeded
    by (seed, query id)."""
    pool = sorted((q["id"], k) for q in queries if q["group"] != query["group"]
                  for k in range(len(q["prompts"])))
    count = settings.unrelated_prompts * settings.unrelated_draws
    if count > len(pool):
        raise InputError(f"query {query['id']!r}: {count} unrelated prompts requested but only "
                         f"{len(pool)} prompts belong to other groups")
    rng = derive_rng(settings.seed, "unrelated", query["id"])
    return rng.sample(pool, count)


# --------------------------------------------------------------------------------------------
# Running the interventions


@dataclass
class EvaluationRun:
    """Per-method records (the lines of `evaluation/{method}.jsonl`) and run statistics."""

    records: dict[str, list[dict]]
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    method: str
    query: int  # index in the dataset
    op: str
    set: str


def evaluate(model, tokenizer, queries: Sequence[Mapping],
             neurons: Mapping[str, Mapping[str, Sequence[Neuron]]],
             settings: EvaluationSettings = EvaluationSettings(),
             encoding: PromptEncoding = PromptEncoding(),
             not_applicable: Mapping[str, str] | None = None,
             progress: bool = True) -> EvaluationRun:
    """Boost / suppress each method's neurons on related and unrelated prompts.

    `neurons`: {method: {query id: [(layer, index), ...]}} (see `neuron_sets`). Returns one record
    per (method, query, op, set, prompt) in the order dataset query, op, set (related first),
    prompt (the query's own prompts in template order; unrelated prompts in draw order).
    `not_applicable`: {method: reason} of methods that do not apply to this model; each gets the
    single record that says so (`qrnca.neurons.methods`).
    """
    from tqdm.auto import tqdm

    if not neurons:
        raise InputError("no neuron methods to evaluate")
    queries = list(queries)
    index = {q["id"]: i for i, q in enumerate(queries)}
    letter_ids = encoding.letters(tokenizer)
    controls = [unrelated_prompts(q, queries, settings) for q in queries]

    # Every row that touches each prompt, keyed by (query index, prompt index).
    touching: dict[tuple[int, int], list[tuple[_Row, int]]] = {}
    for method in neurons:
        for qi, query in enumerate(queries):
            for op in settings.ops:
                for k in range(len(query["prompts"])):
                    touching.setdefault((qi, k), []).append((_Row(method, qi, op, "related"), k))
                for order, (pid, pk) in enumerate(controls[qi]):
                    touching.setdefault((index[pid], pk), []).append(
                        (_Row(method, qi, op, "unrelated"), order))

    # One Edit per (method, query, op), shared by every prompt it touches.
    edit_of = {(method, qi, op): Edit.of(neurons[method][query["id"]], OPS[op])
               for method in neurons for qi, query in enumerate(queries) for op in settings.ops}
    records: dict[str, list[tuple[tuple, dict]]] = {m: [] for m in neurons}
    op_rank = {op: i for i, op in enumerate(settings.ops)}
    rows_total = passes = 0
    started = time.perf_counter()
    prompts = sorted(touching)
    for qi, k in tqdm(prompts, desc="evaluation prompts", disable=not progress):
        query = queries[qi]
        gold = query["answers"][k]
        rows = touching[(qi, k)]
        edits = [CLEAN] + [edit_of[(r.method, r.query, r.op)] for r, _ in rows]
        ids = encoding.ids(tokenizer, query["prompts"][k])
        result = SharedPrefix(model, ids).letter_probabilities(
            edits, letter_ids, gold=gold, chunk_size=settings.chunk_size)
        rows_total += len(edits)
        passes += -(-result.distinct_rows // settings.chunk_size)
        p = result.gold_probs
        predicted = result.predicted
        for j, (row, order) in enumerate(rows, start=1):
            owner = queries[row.query]
            record = {
                "id": owner["id"], "group": owner["group"], "op": row.op,
                "factor": OPS[row.op], "set": row.set, "n_neurons": len(edits[j].neurons),
                "prompt_id": query["id"], "prompt_group": query["group"], "prompt_index": k,
                "gold": gold, "p0": float(p[0]), "p1": float(p[j]),
                "predicted_before": predicted[0], "predicted_after": predicted[j],
            }
            key = (row.query, op_rank[row.op], SETS.index(row.set), order)
            records[row.method].append((key, record))
    seconds = time.perf_counter() - started
    stats = {"queries": len(queries), "methods": list(neurons), "prompts": len(prompts),
             "rows": rows_total, "single_token_passes": passes,
             "prefix_passes": len(prompts), "seconds": round(seconds, 3),
             "seconds_per_prompt": round(seconds / max(len(prompts), 1), 5)}
    ordered = {m: [rec for _, rec in sorted(recs, key=lambda kr: kr[0])]
               for m, recs in records.items()}
    for method, reason in (not_applicable or {}).items():
        ordered[method] = [methods.not_applicable(reason)]
    return EvaluationRun(ordered, stats)


def write_evaluation(directory: str | os.PathLike, run: EvaluationRun,
                     settings: EvaluationSettings, extra: Mapping | None = None) -> list[Path]:
    """Write `{directory}/{method}.jsonl` per method and `{directory}/settings.json` (the
    settings the records depend on, the run statistics that do not depend on the machine or the
    chunk size, and `extra`), each atomically. A non-finite probability is an error
    (`check_finite`) and nothing is written."""
    directory = Path(directory)
    for method, records in run.records.items():
        check_finite(records, f"method {method}")
    paths = []
    for method, records in run.records.items():
        path = directory / f"{method}.jsonl"
        write_jsonl(path, records)
        paths.append(path)
    stats = {k: v for k, v in run.stats.items() if k not in EXECUTION_STATS}
    write_json(directory / SETTINGS_FILE,
               {"settings": settings.result_dict(), "stats": stats, **dict(extra or {})})
    return paths
