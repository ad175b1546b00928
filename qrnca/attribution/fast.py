"""The fast exact integrated gradients of docs/method.md §9 ("staircase" of last-token rows).

IG only ever changes layer l's activation at the LAST position, so per prompt:

1. one forward of the prefix (all tokens but the last) gives every layer's keys/values, shared by
   all rows (`LastTokenRunner.prepare`);
2. one clean last-token pass records, per layer, the post-attention residual and the clean
   activation h̄_l (`LastTokenRunner.clean_pass`);
3. all L × m (layer, α) rows run together, last token only. Rows are ordered by target layer. At
   layer j the rows targeting j join the batch at the clean post-attention residual of layer j
   with their activation set to the leaf α·h̄_j (nothing below layer j's FFN differs from the clean
   run for them), while rows targeting an earlier layer run layer j in full (attention of their own
   query against [shared prefix ; own key/value]). After the last layer: final norm, unembedding,
   float32 softmax, the sum of the target probabilities of all rows, and ONE backward with
   `torch.autograd.grad` w.r.t. the leaves only (weights never require grad).

Rows never interact, so the gradient of the sum w.r.t. a row's leaf is that row's own gradient,
and the result equals the reference algorithm up to floating-point rounding.

Several prompts can share one staircase (`fast_ig_batch`, e.g. the three prompts of a query):
steps 1-2 run per prompt as above, then the rows of all prompts form one batch. At every layer
the rows are kept grouped by prompt (prompt-major, each prompt's rows in the single-prompt order),
so everything row-wise (norms, projections, the FFN, the unembedding, the softmax) runs once for
all of them, while the rotary angles and the attention are taken per prompt against that prompt's
own prefix keys/values, whatever its length (`LastTokenRunner.attention` with row counts). Each
row's target is its own prompt's. Rows still never interact, so every prompt's IG is exactly its
single-prompt IG up to rounding (tested ≤ 1e-5 relative on every fast family).

Rows may be processed in chunks of `max_rows` (each chunk is its own small staircase, which may
hold the rows of several prompts or part of one); on CUDA out-of-memory the chunk size is halved
and the chunk retried, so a batch degrades to fewer prompts per pass and then to fewer rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .common import (CleanState, PromptAttribution, check_prompt, frozen_weights, ig_alphas, log,
                     model_device)
from .lasttoken import LastTokenRunner, PromptContext

#: One prompt of a staircase: its context (prefix keys/values), its clean state, its target id.
Prompt = tuple[PromptContext, CleanState, int]
#: One row of a multi-prompt staircase: (prompt number, target layer, α).
Row = tuple[int, int, float]


def _staircase_batch(runner: LastTokenRunner, prompts: Sequence[Prompt],
                     rows: Sequence[Row]) -> dict[tuple[int, int], torch.Tensor]:
    """Gradient of each row's target probability w.r.t. its activation leaf, summed over the rows
    of each (prompt, target layer): {(prompt, layer): (n,) float32}.

    `rows` (prompt, layer, α) in any order; per prompt they keep their given order within a layer.
    At every layer the running rows are grouped by prompt (ascending prompt number), each prompt's
    rows that run on from earlier layers first, then the rows that join at this layer, which is
    exactly the single-prompt staircase's order when one prompt is given."""
    plan: dict[int, dict[int, list[float]]] = {}
    for prompt, layer, alpha in rows:
        plan.setdefault(prompt, {}).setdefault(layer, []).append(alpha)
    order = sorted(plan)
    ctxs = [prompts[b][0] for b in order]
    cleans = [prompts[b][1] for b in order]
    counts = [0] * len(order)  # rows of each prompt in the running batch
    leaves: dict[tuple[int, int], torch.Tensor] = {}
    x = None
    first = min(layer for layers in plan.values() for layer in layers)
    for layer in range(first, runner.n_layers):
        if x is not None:
            live = [i for i, c in enumerate(counts) if c]
            if len(live) == 1:
                mid_run = x + runner.attention(layer, x, ctxs[live[0]])
            else:
                mid_run = x + runner.attention(layer, x, [ctxs[i] for i in live],
                                               [counts[i] for i in live])
            h_run = runner.activation(layer, mid_run)
        mids, hs = [], []
        offset = 0
        for i, b in enumerate(order):
            if counts[i]:
                mids.append(mid_run[offset:offset + counts[i]])
                hs.append(h_run[offset:offset + counts[i]])
                offset += counts[i]
            alphas = plan[b].get(layer)
            if alphas:
                clean = cleans[i]
                factors = torch.tensor(alphas, dtype=torch.float32, device=clean.activations.device)
                hbar = clean.activations[layer]
                leaf = (factors[:, None].to(hbar.dtype) * hbar[None, :]).detach().requires_grad_(True)
                leaves[(b, layer)] = leaf
                mids.append(clean.resid_mid[layer].expand(leaf.shape[0], -1))
                hs.append(leaf)
                counts[i] += len(alphas)
        mid = mids[0] if len(mids) == 1 else torch.cat(mids)
        h = hs[0] if len(hs) == 1 else torch.cat(hs)
        x = mid + runner.down(layer, h)
    probs = torch.softmax(runner.logits(x).float(), dim=-1)
    if len(order) == 1:
        chosen = probs[:, prompts[order[0]][2]]
    else:
        per_row = torch.tensor([prompts[b][2] for b, count in zip(order, counts)
                                for _ in range(count)], device=probs.device)
        chosen = probs.gather(1, per_row[:, None])[:, 0]
    grads = torch.autograd.grad(chosen.sum(), list(leaves.values()))
    return {key: g.float().sum(dim=0) for key, g in zip(leaves, grads)}


def _staircase_gradients(runner: LastTokenRunner, ctx: PromptContext, clean: CleanState,
                         rows: list[tuple[int, float]], target_id: int) -> dict[int, torch.Tensor]:
    """The single-prompt staircase: gradient of P w.r.t. the activation of each row (rows sorted
    by layer), summed over the rows of each target layer: {layer: (n,) float32}."""
    grads = _staircase_batch(runner, [(ctx, clean, target_id)],
                             [(0, layer, alpha) for layer, alpha in rows])
    return {layer: g for (_, layer), g in grads.items()}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", ())))


def _next_pass(rows: Sequence, start: int, chunk: int, prompt_of: Callable | None) -> list:
    """The rows of the next pass from `start`: at most `chunk` rows, made of whole pieces, a piece
    being at most `chunk` consecutive rows of one prompt, cut from where that prompt's rows
    start (or resume). So each prompt is cut into exactly the pieces that a pass over it alone
    would use, and small pieces of consecutive prompts share a pass."""
    end = start
    while end < len(rows):
        stop = min(end + chunk, len(rows))
        if prompt_of is not None:
            prompt = prompt_of(rows[end])
            stop = next((i for i in range(end + 1, stop) if prompt_of(rows[i]) != prompt), stop)
        if end > start and stop - start > chunk:
            break
        end = stop
    return list(rows[start:end])


def _in_chunks(rows: Sequence, chunk: int, compute: Callable[[list], dict], add: Callable,
               prompt_of: Callable | None = None) -> None:
    """Run `compute` on consecutive passes of at most `chunk` rows (`_next_pass`) and `add` each
    result; on out-of-memory the chunk is halved and the pass retried (down to one row), anything
    else is raised."""
    start = 0
    while start < len(rows):
        part = _next_pass(rows, start, chunk, prompt_of)
        out_of_memory = False
        try:
            with torch.enable_grad():
                result = compute(part)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not _is_oom(exc) or chunk == 1:
                raise
            out_of_memory = True
        if out_of_memory:  # outside the except block, so the failed graph is already freed
            chunk = max(1, min(chunk, len(part)) // 2)
            log.warning("out of memory with %d rows per pass; retrying with %d", len(part), chunk)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        add(result)
        start += len(part)


def _check_max_rows(max_rows: int | None) -> None:
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")


def _result(clean: CleanState, grad_sum: torch.Tensor, steps: int) -> PromptAttribution:
    ig = clean.activations.float() * grad_sum / steps
    return PromptAttribution(ig=ig.cpu(), p0=clean.p0, activations=clean.activations.float().cpu(),
                             state=clean)


def fast_ig(model: nn.Module, input_ids: torch.Tensor, target_id: int, *, steps: int = 16,
            ig_grid: str = "released", max_rows: int | None = None) -> PromptAttribution:
    """IG of every neuron for one prompt (1, T) by the exact last-token staircase.

    `max_rows` bounds the number of (layer, α) rows per backward (None: all L × steps at once);
    on CUDA out-of-memory it is halved and the failed chunk retried (logged). Raises
    `UnsupportedModelError` for families the last-token runner does not know (see
    `qrnca.models.families`). Returns IG and activations as float32 CPU
    tensors plus the clean state (on the model's device) for the log-probability baseline.
    """
    runner = LastTokenRunner(model)
    vocab = runner.lm_head.weight.shape[0]
    input_ids = check_prompt(input_ids, target_id, vocab).to(model_device(model))
    _check_max_rows(max_rows)
    alphas = ig_alphas(steps, ig_grid, dtype=torch.float32).tolist()  # same values as the reference
    rows = [(layer, a) for layer in range(runner.n_layers) for a in alphas]
    chunk = len(rows) if max_rows is None else min(max_rows, len(rows))

    with frozen_weights(model):
        with torch.no_grad():
            ctx = runner.prepare(input_ids)
        clean = runner.clean_pass(ctx, target_id)
        grad_sum = torch.zeros(clean.activations.shape, dtype=torch.float32,
                               device=clean.activations.device)

        def add(grads):
            for layer, g in grads.items():
                grad_sum[layer] += g

        _in_chunks(rows, chunk,
                   lambda part: _staircase_gradients(runner, ctx, clean, part, target_id), add)
    return _result(clean, grad_sum, steps)


def fast_ig_batch(model: nn.Module, input_ids: Sequence[torch.Tensor], target_ids: Sequence[int],
                  *, steps: int = 16, ig_grid: str = "released",
                  max_rows: int | None = None) -> list[PromptAttribution]:
    """IG of every neuron for several prompts (each (1, T_b), any lengths) in shared staircases.

    Equal to `[fast_ig(model, ids, t, ...) for ids, t in zip(input_ids, target_ids)]` up to
    floating-point rounding (each prompt's prefix pass and clean pass are its own; the rows of all
    prompts share the staircase, see the module docstring). `max_rows` bounds the rows of one pass
    over all prompts (None: all prompts × L × steps rows at once); on CUDA out-of-memory it is
    halved and the failed chunk retried (logged), i.e. fewer prompts per pass, then fewer rows.
    Returns one `PromptAttribution` per prompt, in order, each with its clean state."""
    input_ids, target_ids = list(input_ids), [int(t) for t in target_ids]
    if len(input_ids) != len(target_ids):
        raise ValueError(f"{len(input_ids)} prompts but {len(target_ids)} target ids")
    if not input_ids:
        return []
    runner = LastTokenRunner(model)
    vocab = runner.lm_head.weight.shape[0]
    device = model_device(model)
    input_ids = [check_prompt(ids, t, vocab).to(device) for ids, t in zip(input_ids, target_ids)]
    _check_max_rows(max_rows)
    alphas = ig_alphas(steps, ig_grid, dtype=torch.float32).tolist()
    rows = [(b, layer, a) for b in range(len(input_ids)) for layer in range(runner.n_layers)
            for a in alphas]
    chunk = len(rows) if max_rows is None else min(max_rows, len(rows))

    with frozen_weights(model):
        prompts = []
        for ids, target in zip(input_ids, target_ids):
            with torch.no_grad():
                ctx = runner.prepare(ids)
            prompts.append((ctx, runner.clean_pass(ctx, target), target))
        grad_sums = [torch.zeros(clean.activations.shape, dtype=torch.float32,
                                 device=clean.activations.device) for _, clean, _ in prompts]

        def add(grads):
            for (b, layer), g in grads.items():
                grad_sums[b][layer] += g

        _in_chunks(rows, chunk, lambda part: _staircase_batch(runner, prompts, part), add,
                   prompt_of=lambda row: row[0])
    return [_result(clean, grad_sum, steps) for (_, clean, _), grad_sum in zip(prompts, grad_sums)]
