"""The per-shard attribution job: IG of every prompt of every query, written resumably.

Output: the "Attribution" records of docs/formats.md, one finished query per line. The job
appends each finished query to `out_path + ".partial"` and flushes and fsyncs it, so a killed job
keeps what it finished; a rerun reads the finished ids (dropping a truncated last line) and
computes only the rest. When every query of the shard is done, the lines are put in shard order
and written atomically to `out_path`, and the partial file is removed. What the partial file was
made from -- the settings, and the caller's `identity` (the workflow passes the dataset file's
sha256 and the model's identity: id, revision, weights) -- is kept beside it
(`.partial.settings.json`); when a rerun finds anything changed, the partial file is discarded
with a warning naming what changed, never mixed with new records. Every record carries the
`query_sha256` of the dataset line it was computed from, so readers can check it belongs to the
dataset they hold (`qrnca.consistency.read_attribution_shards`).

Shard (i, n) holds the queries whose position in the given list is ≡ i (mod n).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..consistency import query_sha256, shard_queries
from ..errors import AttributionError, InputError
from ..io import dumps_line, output_error, write_json, write_jsonl
from ..models import layouts
from ..models.loading import PromptEncoding
from ..neurons.methods import not_applicable
from .common import PromptAttribution, log
from .fast import fast_ig, fast_ig_batch
from .lasttoken import supports_fast
from .logprob import direction_ranges, hooked_clean_state, logprob_applicability, logprob_top_k
from .reference import reference_ig

METHODS = ("fast", "reference")
#: The record key of the log-probability increase block.
LOGPROB = "logprob_increase"


def attribute_prompt(model: nn.Module, input_ids: torch.Tensor, target_id: int, *, steps: int,
                     ig_grid: str, method: str, max_rows: int | None = None) -> PromptAttribution:
    """IG of one prompt by the chosen method."""
    if method == "fast":
        return fast_ig(model, input_ids, target_id, steps=steps, ig_grid=ig_grid, max_rows=max_rows)
    return reference_ig(model, input_ids, target_id, steps=steps, ig_grid=ig_grid)


def attribute_prompts(model: nn.Module, input_ids: Sequence[torch.Tensor],
                      target_ids: Sequence[int], *, steps: int, ig_grid: str, method: str,
                      max_rows: int | None = None) -> list[PromptAttribution]:
    """IG of several prompts (the unit of work of the job: one query's prompts). `fast`: the
    prompts share staircase passes (`fast_ig_batch`, equal to one `fast_ig` per prompt up to
    rounding; `max_rows` bounds the rows of one pass over all of them); `reference`: one prompt
    after the other."""
    if method == "fast":
        return fast_ig_batch(model, input_ids, target_ids, steps=steps, ig_grid=ig_grid,
                             max_rows=max_rows)
    return [attribute_prompt(model, ids, target, steps=steps, ig_grid=ig_grid, method=method)
            for ids, target in zip(input_ids, target_ids)]


def _check_query(query: Mapping, letters: Mapping[str, int]) -> None:
    qid = query.get("id")
    if not isinstance(qid, str) or not qid:
        raise InputError(f"query without a string 'id': {str(query)[:120]}")
    prompts, answers = query.get("prompts"), query.get("answers")
    if (not isinstance(prompts, list) or not isinstance(answers, list) or not prompts
            or len(prompts) != len(answers) or not all(isinstance(p, str) for p in prompts)):
        raise InputError(f"query {qid!r}: 'prompts' (strings) and 'answers' must be non-empty "
                         "lists of equal length")
    for k, answer in enumerate(answers):
        if answer not in letters:
            raise InputError(f"query {qid!r}, prompt {k}: gold letter {answer!r} is not one of "
                             f"{sorted(letters)}")


def _json_float(value) -> float:
    """A float32 score as the shortest decimal that reads back to the same float32."""
    return float(str(np.float32(value)))


def _ranked(scores: np.ndarray, keep: np.ndarray) -> tuple[list[list[int]], list[float]]:
    """(neurons, scores) of the kept (layer, index) cells, by decreasing score then layer, index."""
    layers, indices = np.nonzero(keep)
    values = scores[layers, indices]
    order = np.lexsort((indices, layers, -values.astype(np.float64)))
    return ([[int(layers[o]), int(indices[o])] for o in order],
            [_json_float(values[o]) for o in order])


def _top_k(scores: np.ndarray, k: int) -> dict:
    flat = scores.reshape(-1).astype(np.float64)
    width = scores.shape[1]
    order = np.lexsort((np.arange(flat.size) % width, np.arange(flat.size) // width, -flat))[:k]
    return {"neurons": [[int(o // width), int(o % width)] for o in order],
            "scores": [_json_float(scores.reshape(-1)[o]) for o in order]}


def sparse_prompt_record(ig: torch.Tensor, p0: float, store_fraction: float) -> dict:
    """One prompt's record: every neuron with IG >= store_fraction × ig_max, ranked. When no IG
    is positive nothing is stored (a non-positive threshold would keep every neuron)."""
    scores = ig.float().numpy()
    ig_max = float(scores.max())
    if ig_max > 0:
        neurons, values = _ranked(scores, scores >= np.float32(store_fraction) * np.float32(ig_max))
    else:
        neurons, values = [], []
    return {"p0": p0, "ig_max": _json_float(ig_max), "n_neurons": int(scores.size),
            "neurons": neurons, "ig": values}


def _prompt_attributions(model: nn.Module, tokenizer, query: Mapping, letters: Mapping[str, int],
                         *, steps: int, ig_grid: str, method: str, max_rows: int | None,
                         encoding: PromptEncoding, need_state: bool):
    """IG of each prompt of one query: ([PromptAttribution], [target id]); with `need_state`
    every result carries its clean state (for the log-probability increase)."""
    qid = query["id"]
    device = next(model.parameters()).device
    ids = [encoding.ids(tokenizer, prompt).to(device) for prompt in query["prompts"]]
    targets = [letters[letter] for letter in query["answers"]]
    results = attribute_prompts(model, ids, targets, steps=steps, ig_grid=ig_grid, method=method,
                                max_rows=max_rows)
    for k, (result, prompt_ids, target) in enumerate(zip(results, ids, targets)):
        if not (torch.isfinite(result.ig).all() and math.isfinite(result.p0)
                and torch.isfinite(result.activations).all()):
            raise AttributionError(f"query {qid!r}, prompt {k}: attribution gave NaN or infinite "
                                   f"scores (p0={result.p0})")
        if need_state and result.state is None:
            result.state = hooked_clean_state(model, prompt_ids, target)
        elif not need_state:
            result.state = None  # not kept: the clean state lives on the model's device
    return results, targets


def _query_record(model: nn.Module, query: Mapping, results, *, store_fraction: float,
                  baseline_top_k: int, logprob) -> dict:
    """The attribution record of one query (docs/formats.md). `logprob`: the summed
    log-probability increase (L, n; exact wherever it can reach the top `baseline_top_k`, −inf
    elsewhere), a not-applicable marker {"not_applicable": reason}, or None when the method was
    not asked for."""
    shape = list(layouts.grid_shape(model))
    activation_sum = torch.zeros(shape, dtype=torch.float32)
    for result in results:
        activation_sum += result.activations
    record = {
        "id": query["id"],
        "group": query.get("group"),
        "shape": shape,
        "prompts": [sparse_prompt_record(r.ig, r.p0, store_fraction) for r in results],
        "activation": _top_k(activation_sum.numpy(), baseline_top_k),
    }
    if isinstance(logprob, Mapping):
        record[LOGPROB] = dict(logprob)
    elif logprob is not None:
        block = _top_k(logprob.numpy(), baseline_top_k)
        if not all(math.isfinite(v) for v in block["scores"]):
            raise AttributionError(f"query {query['id']!r}: log-probability increase is NaN or "
                                   "infinite")
        record[LOGPROB] = block
    return record


def attribute_queries(model: nn.Module, tokenizer, queries: Sequence[Mapping],
                      letters: Mapping[str, int], *, steps: int, ig_grid: str, method: str,
                      store_fraction: float, baseline_top_k: int, max_rows: int | None = None,
                      encoding: PromptEncoding = PromptEncoding(), logprob: bool = True,
                      ranges: torch.Tensor | None = None):
    """Attribution records of `queries`, yielded one by one in order (docs/formats.md).

    The log-probability increase (when `logprob`) is computed for all prompts of the given
    queries together (`logprob_top_k`: exact for the neurons that can reach the stored top
    `baseline_top_k`; `ranges` from `direction_ranges`, computed here when not given); when it
    does not apply to the model, each record says why (`logprob_applicability`). Non-finite
    scores raise `AttributionError` naming the query."""
    reason = logprob_applicability(model) if logprob else None
    need_state = logprob and reason is None
    per_query = [_prompt_attributions(model, tokenizer, q, letters, steps=steps, ig_grid=ig_grid,
                                      method=method, max_rows=max_rows, encoding=encoding,
                                      need_state=need_state) for q in queries]
    summed = [None] * len(queries)
    if reason is not None:
        summed = [not_applicable(reason)] * len(queries)
    elif need_state:
        if ranges is None:
            ranges = direction_ranges(model)
        summed = logprob_top_k(model, [[r.state for r in results] for results, _ in per_query],
                               [targets for _, targets in per_query], max(int(baseline_top_k), 1),
                               ranges)
    for query, (results, _), lp in zip(queries, per_query, summed):
        yield _query_record(model, query, results, store_fraction=store_fraction,
                            baseline_top_k=baseline_top_k, logprob=lp)


def attribute_query(model: nn.Module, tokenizer, query: Mapping, letters: Mapping[str, int],
                    **settings) -> dict:
    """The attribution record of one query (`attribute_queries` of one)."""
    return next(iter(attribute_queries(model, tokenizer, [query], letters, **settings)))


def _changes(previous, current, prefix: str = "") -> list[str]:
    """What differs between two settings dicts, key by key (for the warning)."""
    if not isinstance(previous, Mapping) or not isinstance(current, Mapping):
        return [f"{prefix or 'settings'}: {previous!r} -> {current!r}"]
    out = []
    for key in sorted(set(previous) | set(current), key=str):
        a, b = previous.get(key), current.get(key)
        if a != b:
            name = f"{prefix}.{key}" if prefix else str(key)
            out += (_changes(a, b, name) if isinstance(a, Mapping) and isinstance(b, Mapping)
                    else [f"{name}: {a!r} -> {b!r}"])
    return out


def _discard_if_changed(partial: Path, settings_path: Path, settings: Mapping) -> None:
    """Remove `partial` (and its sidecar), with a warning saying why, unless its sidecar says
    it was made from exactly `settings` (the dataset, the model and the settings)."""
    try:
        previous = json.loads(settings_path.read_text("utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous == settings:
        return
    why = ("no readable record of what it was made from" if previous is None
           else "; ".join(_changes(previous, settings)))
    log.warning("%s: discarding the finished queries of an earlier run, which was made from "
                "something else (%s); starting the shard again", partial, why)
    partial.unlink()
    settings_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming(path: Path):
    """Turn an OSError while writing `path` (a full disk...) into one that names it."""
    try:
        yield
    except OSError as exc:
        raise output_error(path, exc) from exc


def _read_partial(partial: Path) -> list[dict]:
    """Finished records of a partial file. A trailing piece without its newline is a write cut
    short by a kill: it is dropped and cut from the file so that appending continues cleanly.
    A bad line that did end with a newline is corruption and an error."""
    if not partial.exists():
        return []
    data = partial.read_bytes()
    *complete, tail = data.split(b"\n")
    records = []
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{partial}, line {number}: not an attribution record; delete the "
                             ".partial file to start the shard again")
        records.append(record)
    if tail:
        log.warning("%s: dropping a truncated last line (%d bytes)", partial, len(tail))
        os.truncate(partial, len(data) - len(tail))
    return records


def attribute_dataset(model: nn.Module, tokenizer, queries: Sequence[Mapping], out_path, *,
                      steps: int = 16, ig_grid: str = "released",
                      encoding: PromptEncoding = PromptEncoding(),
                      store_fraction: float = 0.05, baseline_top_k: int = 256,
                      shard: tuple[int, int] = (0, 1), method: str = "fast",
                      max_rows: int | None = None, logprob: bool = True,
                      ranges: torch.Tensor | None = None, batch_queries: int = 8,
                      progress: bool = True, identity: Mapping | None = None) -> Path:
    """Attribute every query of shard `shard` and write `out_path` (docs/formats.md,
    "Attribution"). Resumable through `out_path + ".partial"` (see the module docstring).

    `method="fast"` uses the exact last-token staircase and falls back, with a logged warning, to
    the reference algorithm for families it does not support; `method="reference"` always uses
    the released algorithm. `logprob`: also compute the log-probability increase baseline, for
    `batch_queries` queries at a time (an execution setting: the records do not depend on it; a
    killed job loses at most one batch), with the model's `direction_ranges` (given, e.g. read
    from the file the workflow computes once per model, or computed here). The model is put in eval mode with weight gradients
    disabled. Returns `out_path`.
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise InputError(f"attribution method must be one of {METHODS}, got {method!r}")
    if not 0.0 <= float(store_fraction) <= 1.0:
        raise InputError(f"store_fraction must lie in [0, 1], got {store_fraction!r}")
    if int(baseline_top_k) < 0:
        raise InputError(f"baseline_top_k must be >= 0, got {baseline_top_k!r}")
    if int(batch_queries) < 1:
        raise InputError(f"batch_queries must be >= 1, got {batch_queries!r}")
    out_path = Path(out_path)
    model.eval()
    model.requires_grad_(False)
    letters = encoding.letters(tokenizer)
    mine = shard_queries(queries, shard)
    for query in mine:
        _check_query(query, letters)
    order = {q["id"]: p for p, q in enumerate(mine)}
    if len(order) != len(mine):
        raise InputError(f"shard {tuple(shard)} holds duplicate query ids")
    effective = method
    if method == "fast" and not supports_fast(model):
        log.warning("the fast attribution does not support %s (model_type %r); using the reference "
                    "algorithm (L x m full-sequence passes per prompt)", type(model).__name__,
                    getattr(model.config, "model_type", None))
        effective = "reference"

    settings = {"steps": steps, "ig_grid": ig_grid, **encoding.as_dict(),
                "store_fraction": store_fraction, "baseline_top_k": baseline_top_k,
                "shard": list(shard), "method": effective, "shape": list(layouts.grid_shape(model)),
                "logprob": bool(logprob), **({"identity": dict(identity)} if identity else {})}
    settings = json.loads(json.dumps(settings))  # as it reads back from the sidecar
    digests = {q["id"]: query_sha256(q) for q in mine}
    partial = Path(str(out_path) + ".partial")
    settings_path = Path(str(out_path) + ".partial.settings.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():
        _discard_if_changed(partial, settings_path, settings)
    if not partial.exists():
        write_json(settings_path, settings)
    finished = _read_partial(partial)
    stray = [r["id"] for r in finished if r["id"] not in order]
    if stray:
        raise InputError(f"{partial} holds queries not in this shard ({stray[:3]}...); delete it")
    done = {r["id"] for r in finished}
    todo = [q for q in mine if q["id"] not in done]
    if done:
        log.info("%s: resuming, %d of %d queries already finished", partial, len(done), len(mine))

    if logprob and todo and ranges is None and logprob_applicability(model) is None:
        log.info("computing the direction ranges of the log-probability increase bounds")
        ranges = direction_ranges(model)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), disable=not progress,
               desc=f"attribution {out_path.name}", unit="query")
    with _naming(partial), open(partial, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), batch_queries):
            batch = todo[start:start + batch_queries]
            for record in attribute_queries(
                    model, tokenizer, batch, letters, steps=steps, ig_grid=ig_grid,
                    method=effective, store_fraction=store_fraction,
                    baseline_top_k=int(baseline_top_k), max_rows=max_rows, encoding=encoding,
                    logprob=logprob, ranges=ranges):
                record["query_sha256"] = digests[record["id"]]
                fh.write(dumps_line(record))
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(1)
    bar.close()

    records = sorted(_read_partial(partial), key=lambda r: order[r["id"]])
    write_jsonl(out_path, records)
    partial.unlink()
    settings_path.unlink(missing_ok=True)
    return out_path
