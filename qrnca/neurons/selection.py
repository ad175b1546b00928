"""QRNCA: from stored integrated-gradient attributions to query-relevant neurons.

This is the paper's procedure (Chen, Dejl & Toni, AAAI 2025; docs/method.md §4), not the released
code's: there, common neurons were never removed (a `[layer, index]` list was tested against
`"layer_index"` strings), so its "QRNCA" output equalled the *with common neurons* ablation.
Here that ablation is its own method and QRNCA removes the common neurons.

For one dataset run (one model × one dataset) with attribution records as in docs/formats.md:

1. coarse neurons of a prompt: IG > t × ig_max of that prompt (strictly greater, t = 0.2);
2. the cluster of a query: the union of its prompts' coarse neurons;
3. NA(n): n's IG summed over the prompts where it passed, divided by Z, the sum of those sums
   over the cluster (so NA sums to 1 over a cluster);
4. ICA(n) = ln(|C| / (1 + number of clusters containing n)) over all clusters C of the run;
5. common neurons: in more than int(u × |C|) clusters (u = 0.3);
6. QR neurons: cluster neurons ranked by NA × ICA, those > 0, top v = 20, minus common neurons.

Ablations: ``qrnca_no_ica`` ranks by NA alone (top v, common neurons still removed) and
``qrnca_with_common`` keeps the common neurons of the full NA × ICA top v.

Neurons are ``(layer, index)`` tuples internally and ``[layer, index]`` lists on disk. Every
ranking breaks ties by ``(-score, layer, index)`` so outputs never depend on dict or file order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .methods import QRNCA_METHODS

Neuron = tuple[int, int]

#: Methods `select` can produce, in the names of the neurons file (docs/formats.md).

DEFAULT_T = 0.2
DEFAULT_U = 0.3
DEFAULT_TOP_V = 20


class AttributionRecordError(InputError):
    """An attribution record (docs/formats.md, "Attribution") is malformed or inconsistent."""


def rank_key(item: tuple[Neuron, float]) -> tuple[float, int, int]:
    """Sort key of a (neuron, score) pair: highest score first, then (layer, index)."""
    (layer, index), score = item
    return (-score, layer, index)


def ranked(scores: Mapping[Neuron, float]) -> list[tuple[Neuron, float]]:
    """(neuron, score) pairs ordered by (-score, layer, index)."""
    return sorted(scores.items(), key=rank_key)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def query_label(record: Mapping, prompt: int | None = None) -> str:
    """``query 'id'`` (and ``, prompt k``) for error messages."""
    qid = record.get("id", "<no id>") if isinstance(record, Mapping) else "<not an object>"
    return f"query {qid!r}" + (f", prompt {prompt}" if prompt is not None else "")


def record_shape(record: Mapping) -> tuple[int, int]:
    """The (n_layers, n_per_layer) grid of a record; raises if missing or not two positive ints."""
    shape = record.get("shape")
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape)
    ):
        raise AttributionRecordError(
            f"{query_label(record)}: 'shape' must be [n_layers, n_per_layer] of positive ints, got {shape!r}"
        )
    return int(shape[0]), int(shape[1])


def as_neuron(value, shape: tuple[int, int] | None, where: str) -> Neuron:
    """Turn a stored ``[layer, index]`` into a tuple, checking it lies on the grid."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        raise AttributionRecordError(f"{where}: neuron must be [layer, index] ints, got {value!r}")
    layer, index = int(value[0]), int(value[1])
    if layer < 0 or index < 0 or (shape is not None and (layer >= shape[0] or index >= shape[1])):
        raise AttributionRecordError(
            f"{where}: neuron {[layer, index]} is outside the grid {list(shape or ())}"
        )
    return (layer, index)


def _finite(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AttributionRecordError(f"{where}: score must be a finite number, got {value!r}")
    return float(value)


def _slow_scored(neurons: list, scores: list, shape, where: str) -> dict[Neuron, float]:
    """Entry-by-entry validation: slow, but its error names the exact entry at fault."""
    out: dict[Neuron, float] = {}
    for pos, (raw, score) in enumerate(zip(neurons, scores)):
        neuron = as_neuron(raw, shape, f"{where}, entry {pos}")
        if neuron in out:
            raise AttributionRecordError(f"{where}: neuron {list(neuron)} is listed twice")
        out[neuron] = _finite(score, f"{where}, entry {pos}")
    return out


def scored_arrays(
    block: Mapping, key: str, shape: tuple[int, int] | None, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated parallel ``neurons`` / ``key`` lists as arrays ``(n, 2)`` int64 and ``(n,)`` float64.

    Rejects non-integer or off-grid neurons, duplicates and non-finite scores. Checks run
    vectorised (a prompt stores thousands of neurons); on any failure the entry-by-entry check
    runs to name the entry at fault.
    """
    neurons = block.get("neurons")
    scores = block.get(key)
    if not isinstance(neurons, list) or not isinstance(scores, list) or len(neurons) != len(scores):
        raise AttributionRecordError(f"{where}: 'neurons' and '{key}' must be lists of equal length")
    if not neurons:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    try:
        arr = np.asarray(neurons)
        vals = np.asarray(scores)
        ok = (
            arr.ndim == 2
            and arr.shape[1] == 2
            and arr.dtype.kind == "i"
            and vals.ndim == 1
            and vals.dtype.kind in "if"
            and bool(np.isfinite(vals).all())
            and bool((arr >= 0).all())
        )
        if ok and shape is not None:
            ok = bool((arr[:, 0] < shape[0]).all() and (arr[:, 1] < shape[1]).all())
        if ok:
            width = shape[1] if shape is not None else int(arr[:, 1].max()) + 1
            ok = len(np.unique(arr[:, 0] * width + arr[:, 1])) == len(arr)
    except (ValueError, TypeError, OverflowError):
        ok = False
    if not ok:
        _slow_scored(neurons, scores, shape, where)  # raises, naming the entry
        raise AttributionRecordError(f"{where}: malformed 'neurons' / '{key}'")  # pragma: no cover
    return arr.astype(np.int64), vals.astype(np.float64)


def scored_neurons(
    block: Mapping, key: str, shape: tuple[int, int] | None, where: str
) -> dict[Neuron, float]:
    """Read parallel ``neurons`` / ``key`` lists into a dict, rejecting duplicates and bad values."""
    arr, vals = scored_arrays(block, key, shape, where)
    return dict(zip(map(tuple, arr.tolist()), vals.tolist()))


def _prompts(record: Mapping) -> list:
    prompts = record.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise AttributionRecordError(f"{query_label(record)}: 'prompts' must be a non-empty list")
    return prompts


# --------------------------------------------------------------------------------------------
# Steps 1-3: coarse neurons, clusters, NA
# --------------------------------------------------------------------------------------------


def coarse_neurons(
    prompt_record: Mapping, t: float = DEFAULT_T, shape: tuple[int, int] | None = None, where: str = "prompt"
) -> dict[Neuron, float]:
    """Coarse neurons of one prompt: ``{neuron: IG}`` for IG > t × ig_max (strictly greater).

    ``ig_max`` is the record's stored maximum over *all* neurons (the stored list only holds
    neurons above ``store_fraction`` × ig_max, so the threshold must come from the record). When
    ig_max <= 0 no neuron can pass (t × ig_max >= ig_max), which is what the definition gives.
    The caller must have stored with ``store_fraction`` <= t, or neurons would be missing.
    """
    if not 0 <= t <= 1:
        raise InputError(f"threshold t must be in [0, 1], got {t!r}")
    if not isinstance(prompt_record, Mapping):
        raise AttributionRecordError(f"{where}: a prompt entry must be an object")
    ig_max = _finite(prompt_record.get("ig_max"), f"{where}, ig_max")
    arr, vals = scored_arrays(prompt_record, "ig", shape, where)
    keep = vals > t * ig_max
    return dict(zip(map(tuple, arr[keep].tolist()), vals[keep].tolist()))


def prompt_coarse_sets(record: Mapping, t: float = DEFAULT_T) -> list[dict[Neuron, float]]:
    """The coarse neurons (with their IG) of each prompt of a query record, in prompt order."""
    shape = record_shape(record)
    return [coarse_neurons(p, t, shape, query_label(record, k)) for k, p in enumerate(_prompts(record))]


def query_cluster(record: Mapping, t: float = DEFAULT_T) -> dict[Neuron, float]:
    """The cluster of one query with each neuron's NA (sums to 1; empty if no neuron passed).

    NA(n) = Σ_prompts-where-n-passed IG(n) / Z, with Z the same sum taken over every neuron of
    the cluster (the released code's normalisation; docs/method.md §4 step 3).
    """
    summed: dict[Neuron, float] = {}
    for coarse in prompt_coarse_sets(record, t):
        for neuron, score in coarse.items():
            summed[neuron] = summed.get(neuron, 0.0) + score
    z = sum(summed.values())
    if not summed:
        return {}
    # Every summed IG exceeds t × ig_max > 0 of its prompt, so z > 0 here.
    return {n: s / z for n, s in summed.items()}


# --------------------------------------------------------------------------------------------
# Steps 4-5: ICA and common neurons over all clusters of a run
# --------------------------------------------------------------------------------------------


def cluster_counts(clusters: Iterable[Iterable[Neuron]]) -> Counter:
    """Number of clusters containing each neuron."""
    counts: Counter = Counter()
    for cluster in clusters:
        counts.update(set(cluster))
    return counts


def ica(clusters: Sequence[Iterable[Neuron]]) -> dict[Neuron, float]:
    """ICA(n) = ln(|C| / (1 + #clusters containing n)) for every neuron of any cluster.

    A neuron in |C| - 1 clusters gets 0 and one in all |C| clusters a negative value; neither
    can then be a QR neuron (only NA × ICA > 0 is kept).
    """
    n_clusters = len(clusters)
    return {n: math.log(n_clusters / (1 + c)) for n, c in cluster_counts(clusters).items()}


def common_neurons(
    clusters: Sequence[Iterable[Neuron]], u: float = DEFAULT_U
) -> tuple[set[Neuron], int, dict[Neuron, int]]:
    """Neurons in MORE than int(u × |C|) clusters: ``(common set, threshold, counts of common)``.

    ``int`` truncates as in the released code: |C| = 10, u = 0.3 gives threshold 3, so a neuron
    in 3 clusters is not common and one in 4 is.
    """
    if not 0 <= u <= 1:
        raise InputError(f"common-neuron share u must be in [0, 1], got {u!r}")
    threshold = int(u * len(clusters))
    counts = cluster_counts(clusters)
    common = {n: c for n, c in counts.items() if c > threshold}
    return set(common), threshold, common


# --------------------------------------------------------------------------------------------
# Step 6 and the whole run
# --------------------------------------------------------------------------------------------


@dataclass
class QueryCluster:
    """One query's cluster: NA, ICA and NA × ICA of every cluster neuron."""

    id: str
    group: str
    shape: tuple[int, int]
    na: dict[Neuron, float]
    ica: dict[Neuron, float] = field(default_factory=dict)

    def score(self, neuron: Neuron) -> float:
        return self.na[neuron] * self.ica[neuron]


@dataclass
class QrncaRun:
    """Every intermediate of QRNCA for one dataset run, computed once and shared by all methods."""

    clusters: list[QueryCluster]
    common: set[Neuron]
    common_threshold: int
    common_counts: dict[Neuron, int]
    t: float
    u: float
    top_v: int

    def rows(self, method: str = "qrnca") -> list[dict]:
        """Neurons-file rows (docs/formats.md "Neurons") for one of `QRNCA_METHODS`."""
        if method not in QRNCA_METHODS:
            raise InputError(f"unknown QRNCA method {method!r}; expected one of {QRNCA_METHODS}")
        out = []
        for c in self.clusters:
            if method == "qrnca_no_ica":
                scores = dict(c.na)
            else:
                scores = {n: c.score(n) for n in c.na}
            top = [(n, s) for n, s in ranked(scores) if s > 0][: self.top_v]
            if method != "qrnca_with_common":
                top = [(n, s) for n, s in top if n not in self.common]
            out.append(
                {
                    "id": c.id,
                    "group": c.group,
                    "neurons": [list(n) for n, _ in top],
                    "scores": [s for _, s in top],
                }
            )
        return out

    def common_json(self) -> dict:
        """The common.json document: threshold, |C|, common neurons by (-count, layer, index)."""
        order = sorted(self.common_counts.items(), key=lambda item: (-item[1], *item[0]))
        return {
            "threshold": self.common_threshold,
            "clusters": len(self.clusters),
            "neurons": [list(n) for n, _ in order],
            "counts": [c for _, c in order],
        }

    def cluster_score_records(self) -> list[dict]:
        """Selection-extras records (docs/formats.md "Selection extras"): every cluster neuron's
        NA, ICA and NA × ICA, ranked by (-NA × ICA, layer, index); feeds the Fig. 5 heatmaps."""
        out = []
        for c in self.clusters:
            order = ranked({n: c.score(n) for n in c.na})
            out.append(
                {
                    "id": c.id,
                    "group": c.group,
                    "shape": list(c.shape),
                    "neurons": [list(n) for n, _ in order],
                    "na": [c.na[n] for n, _ in order],
                    "ica": [c.ica[n] for n, _ in order],
                    "score": [s for _, s in order],
                }
            )
        return out


def check_run(records: Sequence[Mapping]) -> tuple[int, int]:
    """Validate the records of one dataset run (ids, groups, one shape); return the shape."""
    if not records:
        raise AttributionRecordError("no attribution records: a dataset run needs at least one query")
    seen: set[str] = set()
    shape = None
    for pos, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise AttributionRecordError(f"record {pos}: not a JSON object")
        qid, group = record.get("id"), record.get("group")
        if not isinstance(qid, str) or not qid:
            raise AttributionRecordError(f"record {pos}: 'id' must be a non-empty string, got {qid!r}")
        if not isinstance(group, str) or not group:
            raise AttributionRecordError(f"{query_label(record)}: 'group' must be a non-empty string")
        if qid in seen:
            raise AttributionRecordError(f"{query_label(record)}: id occurs twice in the run")
        seen.add(qid)
        this = record_shape(record)
        if shape is None:
            shape = this
        elif this != shape:
            raise AttributionRecordError(
                f"{query_label(record)}: shape {list(this)} differs from the run's {list(shape)} "
                "(one run = one model × one dataset)"
            )
    return shape


def run_qrnca(
    records: Sequence[Mapping], t: float = DEFAULT_T, u: float = DEFAULT_U, top_v: int = DEFAULT_TOP_V
) -> QrncaRun:
    """Compute clusters, ICA and common neurons of one dataset run (all its queries together)."""
    if not isinstance(top_v, int) or top_v < 1:
        raise InputError(f"top_v must be a positive int, got {top_v!r}")
    shape = check_run(records)
    clusters = [
        QueryCluster(id=r["id"], group=r["group"], shape=shape, na=query_cluster(r, t)) for r in records
    ]
    sets = [c.na.keys() for c in clusters]
    ica_all = ica(sets)
    for c in clusters:
        c.ica = {n: ica_all[n] for n in c.na}
    common, threshold, counts = common_neurons(sets, u)
    return QrncaRun(clusters, common, threshold, counts, t, u, top_v)


def select(
    records: Sequence[Mapping],
    method: str = "qrnca",
    t: float = DEFAULT_T,
    u: float = DEFAULT_U,
    top_v: int = DEFAULT_TOP_V,
) -> list[dict]:
    """Neurons-file rows of `method` (one of `QRNCA_METHODS`) for a whole dataset run."""
    return run_qrnca(records, t, u, top_v).rows(method)
