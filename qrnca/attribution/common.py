"""Pieces shared by the reference and the fast attribution: the α grid, the result record, and
the guards that keep weight gradients from ever being built.

Integrated gradients (docs/method.md §3): for layer l with clean last-position activation h̄,

    IG(l, i) = h̄_i · (1/m) Σ_k ∂P(α_k · h̄ at layer l) / ∂h_i

where P is the full-vocabulary softmax probability of the target token at the last position and
only layer l's activation vector at the last position is replaced by α_k · h̄.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..errors import InputError

log = logging.getLogger("qrnca.attribution")

#: The α grids of the IG Riemann sum (decision `ig_grid`, docs/method.md §3), by name: m -> the m
#: scaling factors α_k. A new grid is one entry here and its name in the schema's `ig_grid` enum.
IG_GRIDS = {
    # the released code: linspace(0, 1, m), both ends included
    "released": lambda steps, dtype, device: torch.linspace(0.0, 1.0, steps, dtype=dtype,
                                                            device=device),
    # the paper: k/m, k = 1..m
    "paper": lambda steps, dtype, device: torch.arange(1, steps + 1, dtype=dtype,
                                                       device=device) / steps,
}


def ig_alphas(steps: int, grid: str = "released", dtype=torch.float32, device=None) -> torch.Tensor:
    """The m scaling factors α_k of the IG Riemann sum of grid `grid` (`IG_GRIDS`). Either way
    the sum of gradients is divided by m."""
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"IG steps must be a positive integer, got {steps!r}")
    if grid not in IG_GRIDS:
        raise InputError(f"ig_grid must be one of {tuple(IG_GRIDS)}, got {grid!r}")
    return IG_GRIDS[grid](steps, dtype, device)


@dataclass
class CleanState:
    """What the clean forward of one prompt yields at the last position, per layer.

    `activations` (L, n): the down-projection input h̄_l (the neurons); `resid_mid` (L, d): the
    residual stream after layer l's attention, before its FFN adds anything (Yu & Ananiadou's h);
    `final_resid` (d,): the input of the final norm (its statistics are frozen for the
    log-probability increase); `p0`: the target's probability; `ffn_output` (L, d): for families
    that normalise the FFN output before adding it (Gemma 2/3), the down projection's raw output,
    whose statistics the log-probability increase freezes too (None otherwise). Tensors are
    detached, on the model's device and in its dtype.
    """

    activations: torch.Tensor
    resid_mid: torch.Tensor | None
    final_resid: torch.Tensor | None
    p0: float
    ffn_output: torch.Tensor | None = None


@dataclass
class PromptAttribution:
    """IG of every neuron of one prompt: `ig` (L, n) float32 on the CPU, `p0` the clean target
    probability, `activations` (L, n) float32 on the CPU, and the clean state when the method
    produced it (used by the log-probability-increase baseline)."""

    ig: torch.Tensor
    p0: float
    activations: torch.Tensor
    state: CleanState | None = field(default=None, repr=False)


def target_probability(logits: torch.Tensor, target_id: int) -> torch.Tensor:
    """Full-vocabulary softmax probability of `target_id` per row, computed in float32."""
    return torch.softmax(logits.float(), dim=-1)[..., target_id]


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """Temporarily switch off `requires_grad` on every parameter (restored afterwards), so that
    autograd never builds a gradient of a weight: only the activation leaves are differentiated."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_prompt(input_ids: torch.Tensor, target_id: int, vocab_size: int) -> torch.Tensor:
    """Validate one prompt's ids (1, T) and the target id; return ids as a (1, T) long tensor."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise InputError(f"expected the token ids of one prompt, shape (1, T), got {tuple(input_ids.shape)}")
    if not 0 <= int(target_id) < vocab_size:
        raise InputError(f"target token id {target_id} outside the vocabulary (size {vocab_size})")
    return input_ids.long()
