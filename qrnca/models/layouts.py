"""Where the neurons are: the FFN down projection of each decoder layer, per model family.

A neuron is one coordinate of the input of a layer's FFN down projection (docs/method.md §1): for GLU
models (Llama, Mistral, Qwen2, Gemma) `h = up(x) * act(gate(x))` entering `mlp.down_proj`; for
GPT-2 the post-GELU activation entering `mlp.c_proj`; GPT-NeoX `mlp.dense_4h_to_h`; OPT `fc2`;
Phi `mlp.fc2`. The paths come from the family registry (`qrnca.models.families`). This module finds
those modules and reads or edits their input at the last position through forward pre-hooks,
which is architecture-agnostic and exact.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .families import family_of


def _resolve(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _resolve(model, family_of(model).layers)


def down_projections(model: nn.Module) -> list[nn.Module]:
    """The FFN down projection of every decoder layer, bottom to top."""
    layout = family_of(model)
    return [_resolve(layer, layout.down_proj) for layer in decoder_layers(model)]


def final_norm(model: nn.Module) -> nn.Module:
    return _resolve(model, family_of(model).final_norm)


def ffn_out_norms(model: nn.Module) -> list[nn.Module] | None:
    """The norm each decoder layer applies to its FFN output before the residual add (Gemma 2/3),
    bottom to top; None for families that add the down projection's output directly."""
    path = family_of(model).ffn_out_norm
    if path is None:
        return None
    return [_resolve(layer, path) for layer in decoder_layers(model)]


def down_proj_weight(model: nn.Module, layer: int) -> torch.Tensor:
    """(d_model, n_neurons) weight of layer `layer`'s down projection: column i is neuron i's
    output direction (its "value vector")."""
    module = down_projections(model)[layer]
    weight = module.weight
    return weight.T if family_of(model).transposed_weight else weight


def grid_shape(model: nn.Module) -> tuple[int, int]:
    """(number of layers, neurons per layer)."""
    projections = down_projections(model)
    return len(projections), down_proj_weight(model, 0).shape[1]


EditFn = Callable[[int, torch.Tensor], torch.Tensor | None]


@contextlib.contextmanager
def edit_last_position(model: nn.Module, edit: EditFn, layers: Iterable[int] | None = None):
    """While active, the down-projection input at the LAST position of every sequence in the
    batch is replaced by `edit(layer, activation)` (activation: (batch, n_neurons)); returning
    None leaves it unchanged. Earlier positions are never touched. Batches must be left-padded
    (or unpadded) so that position -1 is every row's last prompt token."""
    layout = family_of(model)
    projections = down_projections(model)
    wanted = set(range(len(projections))) if layers is None else set(layers)
    batch_size: list[int] = []  # seen by flattened layouts, whose FFN input has lost the batch axis
    handles = []

    def remember_batch(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        batch_size[:] = [hidden.shape[0]]

    def make_hook(layer: int):
        def hook(module, args):
            (x, *rest) = args
            flat_shape = x.shape
            if layout.flattened and x.dim() == 2:
                x = x.reshape(batch_size[0], -1, x.shape[-1])
            new_last = edit(layer, x[:, -1])
            if new_last is None:
                return None
            x = torch.cat([x[:, :-1], new_last.to(x.dtype).unsqueeze(1)], dim=1)
            return (x.reshape(flat_shape), *rest)

        return hook

    try:
        for layer, module in enumerate(projections):
            if layer in wanted:
                handles.append(module.register_forward_pre_hook(make_hook(layer)))
        if layout.flattened:
            for block in decoder_layers(model):
                handles.append(block.register_forward_pre_hook(remember_batch, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def record_last_position(model: nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Collect each layer's down-projection input at the last position: {layer: (batch, n)}."""
    recorded: dict[int, torch.Tensor] = {}

    def edit(layer: int, activation: torch.Tensor):
        recorded[layer] = activation.detach().clone()
        return None

    with edit_last_position(model, edit):
        yield recorded


def multiply_edit(multipliers: Mapping[int, torch.Tensor]) -> EditFn:
    """An edit that multiplies the last-position activation of layer l by `multipliers[l]`
    ((n,) or (batch, n)); layers absent from the mapping are left unchanged."""

    def edit(layer: int, activation: torch.Tensor):
        factor = multipliers.get(layer)
        if factor is None:
            return None
        return activation * factor.to(activation.dtype)

    return edit
