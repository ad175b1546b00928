"""Baseline neuron sets, recomputed on CPU from the stored attribution records (docs/method.md §5).

Every baseline returns, per query, as many neurons as QRNCA found for that query (the QRNCA
neurons rows are passed in), so that PCR and editing compare sets of equal size:

- ``random``: uniformly random distinct neurons of the whole grid, seeded per query from
  ``(seed, query id)`` through SHA-256, so a query's draw does not depend on which other queries
  or shards are in the run. Kept in draw order (a random ranking: any prefix is again uniform);
  scores are 0.0.
- ``activation``: the stored top-K neurons by clean last-token activation summed over the
  query's prompts, truncated.
- ``logprob_increase`` (Yu & Ananiadou 2024): the stored top-K by log-probability increase
  summed over the prompts, truncated.
- ``knowledge_neuron`` (KN*, Dai et al. 2022 adapted): the per-prompt coarse sets (t = 0.2);
  neurons coarse in MORE than p × |Q| prompts (kn_share p = 0.5: at least 2 of 3) ranked by IG
  summed over the prompts where they passed. No ICA, common neurons kept. Decision
  ``kn_match_count`` (default true) truncates to the QRNCA count; false keeps all of them.
  KN* may find fewer neurons than QRNCA; it then keeps the ones it has.

Rankings break ties by ``(-score, layer, index)``.

Adding a baseline: its selector in `SELECTORS` (here or in its own module), its name in
`qrnca.neurons.methods.BASELINE_METHODS` (table order, the workflow's wildcard), the config keys it
reads in `qrnca.workflow.config_usage.BASELINE_KEYS`, and the name in the `methods` enum of
`config/schema/config.schema.yaml`.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from ..datasets.render import hashed_seed
from ..errors import InputError
from .methods import BASELINE_METHODS, NOT_APPLICABLE, not_applicable
from .selection import (DEFAULT_T, AttributionRecordError, Neuron, check_run, query_label,
                        prompt_coarse_sets, ranked, record_shape, scored_neurons)

DEFAULT_KN_SHARE = 0.5


class BaselineError(InputError):
    """A baseline cannot be computed from the inputs given (e.g. too few stored neurons)."""


def query_seed(seed: int, query_id: str) -> int:
    """A stable 64-bit seed for one query: `hashed_seed` of ``"{seed}:{query_id}"``."""
    return hashed_seed(f"{seed}:{query_id}")


def random_neurons(shape: Sequence[int], n: int, seed: int, query_id: str) -> list[Neuron]:
    """`n` distinct neurons drawn uniformly from the ``shape`` grid, in draw order."""
    n_layers, n_per_layer = int(shape[0]), int(shape[1])
    total = n_layers * n_per_layer
    if not 0 <= n <= total:
        raise BaselineError(
            f"query {query_id!r}: cannot draw {n} distinct neurons from a {n_layers}x{n_per_layer} grid"
        )
    rng = random.Random(query_seed(seed, query_id))
    return [divmod(flat, n_per_layer) for flat in rng.sample(range(total), n)]


def stored_top(record: Mapping, key: str, n: int) -> list[tuple[Neuron, float]]:
    """The top `n` of a record's stored ``activation`` / ``logprob_increase`` block."""
    block = record.get(key)
    where = f"{query_label(record)}, {key}"
    if not isinstance(block, Mapping):
        raise AttributionRecordError(f"{where}: missing block")
    scores = scored_neurons(block, "scores", record_shape(record), where)
    if len(scores) < n:
        raise BaselineError(
            f"{where}: {n} neurons needed (the QRNCA count) but only {len(scores)} stored; "
            "rerun attribution with a larger baseline_top_k"
        )
    return ranked(scores)[:n]


def knowledge_neurons(
    record: Mapping, t: float = DEFAULT_T, kn_share: float = DEFAULT_KN_SHARE
) -> list[tuple[Neuron, float]]:
    """KN*: neurons coarse in more than kn_share × |Q| prompts, ranked by IG summed where coarse."""
    if not 0 <= kn_share < 1:
        raise InputError(f"kn_share must be in [0, 1), got {kn_share!r}")
    coarse = prompt_coarse_sets(record, t)
    need = kn_share * len(coarse)
    summed: dict[Neuron, float] = {}
    present: dict[Neuron, int] = {}
    for prompt in coarse:
        for neuron, score in prompt.items():
            summed[neuron] = summed.get(neuron, 0.0) + score
            present[neuron] = present.get(neuron, 0) + 1
    return ranked({n: s for n, s in summed.items() if present[n] > need})


def _knowledge_neuron(record: Mapping, n: int, *, t: float, kn_share: float,
                      kn_match_count: bool, **_) -> list[tuple[Neuron, float]]:
    chosen = knowledge_neurons(record, t, kn_share)
    return chosen[:n] if kn_match_count else chosen


def _random(record: Mapping, n: int, *, seed: int, **_) -> list[tuple[Neuron, float]]:
    return [(neuron, 0.0) for neuron in random_neurons(record_shape(record), n, seed, record["id"])]


def _stored(key: str):
    def select(record: Mapping, n: int, **_) -> list[tuple[Neuron, float]]:
        return stored_top(record, key, n)

    return select


#: How each baseline of `qrnca.neurons.methods.BASELINE_METHODS` picks one query's neurons:
#: `select(record, n, seed=, t=, kn_share=, kn_match_count=)` -> [(neuron, score)], best first
#: (a selector takes the settings it needs and ignores the rest).
SELECTORS = {
    "knowledge_neuron": _knowledge_neuron,
    "activation": _stored("activation"),
    "random": _random,
    "logprob_increase": _stored("logprob_increase"),
}


def _counts(records: Sequence[Mapping], qrnca_rows: Sequence[Mapping]) -> dict[str, int]:
    counts = {}
    for pos, row in enumerate(qrnca_rows):
        qid, neurons = row.get("id"), row.get("neurons")
        if not isinstance(qid, str) or not isinstance(neurons, list):
            raise InputError(f"QRNCA row {pos}: needs 'id' (str) and 'neurons' (list)")
        counts[qid] = len(neurons)
    missing = [r["id"] for r in records if r["id"] not in counts]
    if missing:
        raise InputError(f"no QRNCA row for {len(missing)} queries, e.g. {missing[0]!r}")
    return counts


def baseline_rows(
    records: Sequence[Mapping],
    method: str,
    qrnca_rows: Sequence[Mapping],
    *,
    seed: int = 0,
    t: float = DEFAULT_T,
    kn_share: float = DEFAULT_KN_SHARE,
    kn_match_count: bool = True,
) -> list[dict]:
    """Neurons-file rows (docs/formats.md "Neurons") of baseline `method`, in record order. A
    stored block that says its method does not apply (`qrnca.neurons.methods`) gives rows that say so."""
    if method not in BASELINE_METHODS:
        raise InputError(f"unknown baseline {method!r}; expected one of {BASELINE_METHODS}")
    check_run(records)
    counts = _counts(records, qrnca_rows)
    out = []
    for record in records:
        n = counts[record["id"]]
        block = record.get(method)
        if isinstance(block, Mapping) and NOT_APPLICABLE in block:
            out.append({"id": record["id"], "group": record["group"], "neurons": [], "scores": [],
                        **not_applicable(block[NOT_APPLICABLE])})
            continue
        chosen = SELECTORS[method](record, n, seed=seed, t=t, kn_share=kn_share,
                                   kn_match_count=kn_match_count)
        out.append(
            {
                "id": record["id"],
                "group": record["group"],
                "neurons": [list(nrn) for nrn, _ in chosen],
                "scores": [s for _, s in chosen],
            }
        )
    return out
