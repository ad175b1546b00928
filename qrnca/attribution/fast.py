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
and the result equals the reference algorithm up to floating-point rounding. Rows may be processed
in chunks of `max_rows` (each chunk is its own small staircase); on CUDA out-of-memory the chunk
size is halved and the chunk retried.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    CleanState,
    PromptAttribution,
    check_prompt,
    frozen_weights,
    ig_alphas,
    log,
    model_device,
    target_probability,
)
from .lasttoken import LastTokenRunner, PromptContext


def _staircase_gradients(runner: LastTokenRunner, ctx: PromptContext, clean: CleanState,
                         rows: list[tuple[int, float]], target_id: int) -> dict[int, torch.Tensor]:
    """Gradient of P w.r.t. the activation of each row (rows sorted by layer), summed over the
    rows of each target layer: {layer: (n,) float32}."""
    by_layer: dict[int, list[float]] = {}
    for layer, alpha in rows:
        by_layer.setdefault(layer, []).append(alpha)
    leaves: dict[int, torch.Tensor] = {}
    x = None
    dtype = clean.activations.dtype
    for layer in range(min(by_layer), runner.n_layers):
        mids, hs = [], []
        if x is not None:
            mid = x + runner.attention(layer, x, ctx)
            mids.append(mid)
            hs.append(runner.activation(layer, mid))
        if layer in by_layer:
            alphas = torch.tensor(by_layer[layer], dtype=torch.float32,
                                  device=clean.activations.device)
            hbar = clean.activations[layer]
            leaf = (alphas[:, None].to(dtype) * hbar[None, :]).detach().requires_grad_(True)
            leaves[layer] = leaf
            mids.append(clean.resid_mid[layer].expand(leaf.shape[0], -1))
            hs.append(leaf)
        mid = mids[0] if len(mids) == 1 else torch.cat(mids)
        h = hs[0] if len(hs) == 1 else torch.cat(hs)
        x = mid + runner.down(layer, h)
    prob = target_probability(runner.logits(x), target_id).sum()
    grads = torch.autograd.grad(prob, list(leaves.values()))
    return {layer: g.float().sum(dim=0) for layer, g in zip(leaves, grads)}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", ())))


def fast_ig(model: nn.Module, input_ids: torch.Tensor, target_id: int, *, steps: int = 16,
            ig_grid: str = "released", max_rows: int | None = None) -> PromptAttribution:
    """IG of every neuron for one prompt (1, T) by the exact last-token staircase.

    `max_rows` bounds the number of (layer, α) rows per backward (None: all L × steps at once);
    on CUDA out-of-memory it is halved and the failed chunk retried (logged). Raises
    `UnsupportedModelError` for families the last-token runner does not know (see
    `qrnca.families`). Returns IG and activations as float32 CPU
    tensors plus the clean state (on the model's device) for the log-probability baseline.
    """
    runner = LastTokenRunner(model)
    vocab = runner.lm_head.weight.shape[0]
    input_ids = check_prompt(input_ids, target_id, vocab).to(model_device(model))
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")
    alphas = ig_alphas(steps, ig_grid, dtype=torch.float32).tolist()  # same values as the reference
    rows = [(layer, a) for layer in range(runner.n_layers) for a in alphas]
    chunk = len(rows) if max_rows is None else min(max_rows, len(rows))

    with frozen_weights(model):
        with torch.no_grad():
            ctx = runner.prepare(input_ids)
        clean = runner.clean_pass(ctx, target_id)
        grad_sum = torch.zeros(clean.activations.shape, dtype=torch.float32,
                               device=clean.activations.device)
        start = 0
        while start < len(rows):
            part = rows[start:start + chunk]
            out_of_memory = False
            try:
                with torch.enable_grad():
                    grads = _staircase_gradients(runner, ctx, clean, part, target_id)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not _is_oom(exc) or chunk == 1:
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the except block, so the failed graph is already freed
                chunk = max(1, chunk // 2)
                log.warning("out of memory with %d rows per chunk; retrying with %d", len(part), chunk)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for layer, g in grads.items():
                grad_sum[layer] += g
            start += len(part)
    ig = clean.activations.float() * grad_sum / steps
    return PromptAttribution(ig=ig.cpu(), p0=clean.p0, activations=clean.activations.float().cpu(),
                             state=clean)
