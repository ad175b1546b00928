"""The reference integrated gradients: the straightforward algorithm of the released code.

For every layer l, a batch of m copies of the FULL prompt is run with a forward pre-hook on that
layer's FFN down projection that replaces the last position's input by α_k · h̄ (a leaf tensor
that requires grad); the target probabilities of the m rows are summed and differentiated once.
This costs L × m full-sequence forward and backward passes per prompt, and it is the test oracle
of the fast method (`qrnca.attribution.fast`). It works for every family in `qrnca.models.layouts`
because it only uses the down-projection hooks.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..models import layouts
from .common import (PromptAttribution, check_prompt, frozen_weights, ig_alphas, model_device,
                     target_probability)


def _last_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (batch, vocab) at the last position, only computing the unembedding there."""
    return model(input_ids=input_ids, logits_to_keep=1, use_cache=False).logits[:, -1]


def reference_ig(model: nn.Module, input_ids: torch.Tensor, target_id: int, *, steps: int = 16,
                 ig_grid: str = "released", layers: Iterable[int] | None = None) -> PromptAttribution:
    """IG of every neuron of `layers` (default all) for one prompt, by the released algorithm.

    `input_ids` (1, T) include BOS; `target_id` is the gold letter's token id. Rows of layers not
    computed are zero in the returned `ig` (L, n) float32 CPU tensor.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    input_ids = check_prompt(input_ids, target_id, vocab).to(model_device(model))
    n_layers, width = layouts.grid_shape(model)
    wanted = list(range(n_layers)) if layers is None else sorted(set(layers))

    with frozen_weights(model), torch.no_grad():
        with layouts.record_last_position(model) as recorded:
            logits = _last_logits(model, input_ids)
        p0 = float(target_probability(logits, target_id)[0])
        clean = torch.stack([recorded[l][0] for l in range(n_layers)])  # (L, n), model dtype

    ig = torch.zeros(n_layers, width, dtype=torch.float32)
    alphas = ig_alphas(steps, ig_grid, dtype=torch.float32, device=clean.device)
    batch = input_ids.expand(steps, -1)
    with frozen_weights(model):
        for layer in wanted:
            hbar = clean[layer]
            leaf = (alphas[:, None].to(hbar.dtype) * hbar[None, :]).detach().requires_grad_(True)

            def edit(l, activation, leaf=leaf):
                return leaf

            with torch.enable_grad(), layouts.edit_last_position(model, edit, layers=[layer]):
                prob = target_probability(_last_logits(model, batch), target_id).sum()
                (grad,) = torch.autograd.grad(prob, leaf)
            ig[layer] = (hbar.float() * grad.float().mean(dim=0)).cpu()
    return PromptAttribution(ig=ig, p0=p0, activations=clean.float().cpu())
