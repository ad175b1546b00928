"""Yu & Ananiadou's log-probability increase of every FFN neuron (method.md §5), exactly.

For neuron i of layer l at the last position,

    Imp(l, i) = log p(w | h_l + m_{l,i} v_{l,i}) − log p(w | h_l)

with h_l the residual after layer l's attention (before its FFN), m its activation, v its
down-projection column and w the gold token; p is read through the final norm with its statistics
frozen at the clean run's final residual, then the unembedding. With frozen statistics the norm is
affine, N(x) = g ⊙ (x − μ) / s + b (RMSNorm: μ = 0, b = 0, s = rms; LayerNorm: the clean mean and
standard deviation), so

    logits(h + m v) = logits(h) + m · W_U (g ⊙ v / s)

and the directions W_U diag(g) V_l of all neurons of a layer are one (vocab, d) @ (d, n) product,
computed once per layer for all prompts given together (only the scalar 1/s is per prompt), in
chunks of neurons to bound memory. Only the target's log-softmax is kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import layouts
from ..errors import InputError
from .common import CleanState, check_prompt, model_device, target_probability


def _norm_affine(norm: nn.Module, x0: torch.Tensor):
    """(gain g, shift μ, scale s, bias b) of `norm` with statistics frozen at x0 (d,), float32."""
    x = x0.float()
    weight = getattr(norm, "weight", None)
    gain = torch.ones_like(x) if weight is None else weight.float()
    bias = getattr(norm, "bias", None)
    bias = torch.zeros_like(x) if bias is None else bias.float()
    if isinstance(norm, nn.LayerNorm):
        eps = norm.eps
        mean = x.mean()
        scale = torch.sqrt(((x - mean) ** 2).mean() + eps)
        return gain, mean, scale, bias
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", None)
    if eps is None:
        raise InputError(f"cannot freeze the statistics of final norm {type(norm).__name__}")
    if type(norm).__name__.startswith("Gemma"):  # Gemma's RMSNorm multiplies by (1 + weight)
        gain = 1.0 + gain
    scale = torch.sqrt((x ** 2).mean() + eps)
    return gain, torch.zeros((), device=x.device), scale, bias


def frozen_norm_logits(model: nn.Module, final_resid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits (…, vocab) of residual(s) x read through the final norm with statistics frozen at
    `final_resid`, then the unembedding; float32. At x = final_resid it equals the model."""
    gain, mean, scale, bias = _norm_affine(layouts.final_norm(model), final_resid)
    head = model.get_output_embeddings()
    normed = gain * (x.float() - mean) / scale + bias
    out = normed @ head.weight.float().T
    if getattr(head, "bias", None) is not None:
        out = out + head.bias.float()
    return out


@torch.no_grad()
def hooked_clean_state(model: nn.Module, input_ids: torch.Tensor, target_id: int) -> CleanState:
    """The clean state from one full forward with hooks, for any family in `qrnca.layouts`: the
    neurons (down-projection input), h_l = decoder layer output − down-projection output (the
    residual without this FFN's contribution; equal to the post-attention residual for sequential
    blocks), and the input of the final norm, all at the last position."""
    vocab = model.get_output_embeddings().weight.shape[0]
    input_ids = check_prompt(input_ids, target_id, vocab).to(model_device(model))
    projections = layouts.down_projections(model)
    blocks = layouts.decoder_layers(model)
    if hasattr(blocks[0], "post_feedforward_layernorm"):
        raise InputError(f"{type(model).__name__} normalises the FFN output before adding it to "
                         "the residual; the log-probability increase is not defined for it here")
    n_tokens = input_ids.shape[1]
    acts, downs, outs, final = {}, {}, {}, {}

    def last(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2:  # flattened (batch*seq, d) inside OPT's FFN; batch is 1
            return t[n_tokens - 1]
        return t[0, -1]

    def on_down(layer):
        def hook(module, args, output):
            acts[layer] = last(args[0]).detach().clone()
            downs[layer] = last(output).detach().clone()
        return hook

    def on_block(layer):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            outs[layer] = last(out).detach().clone()
        return hook

    def on_norm(module, args):
        final["x"] = last(args[0]).detach().clone()

    handles = [p.register_forward_hook(on_down(l)) for l, p in enumerate(projections)]
    handles += [b.register_forward_hook(on_block(l)) for l, b in enumerate(blocks)]
    handles.append(layouts.final_norm(model).register_forward_pre_hook(on_norm))
    try:
        logits = model(input_ids=input_ids, logits_to_keep=1, use_cache=False).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    layers = range(len(projections))
    return CleanState(
        activations=torch.stack([acts[l] for l in layers]),
        resid_mid=torch.stack([outs[l] - downs[l] for l in layers]),
        final_resid=final["x"],
        p0=float(target_probability(logits, target_id)[0]),
    )


@torch.no_grad()
def logprob_increase(model: nn.Module, states: Sequence[CleanState], target_ids: Sequence[int], *,
                     neuron_chunk: int = 2048) -> torch.Tensor:
    """Imp(l, i) of every neuron for each prompt: (prompts, L, n) float32 on the CPU.

    `states` come from `fast_ig(...).state`, `last_token_state` or `hooked_clean_state`; the
    direction matrix of each layer is computed once for all prompts given, `neuron_chunk`
    neurons at a time, in the model's dtype (float32 softmax and accumulation).
    """
    if len(states) != len(target_ids) or not states:
        raise InputError("logprob_increase needs one target id per clean state (and at least one)")
    n_layers, width = layouts.grid_shape(model)
    head = model.get_output_embeddings()
    dtype = head.weight.dtype
    device = head.weight.device
    affines = [_norm_affine(layouts.final_norm(model), s.final_resid.to(device)) for s in states]
    gain = affines[0][0]
    result = torch.empty(len(states), n_layers, width, dtype=torch.float32)
    for layer in range(n_layers):
        values = layouts.down_proj_weight(model, layer)  # (d, n)
        # log p(· | h_l) per prompt, float32
        base_logprobs = []
        for state, (_, mean, scale, bias) in zip(states, affines):
            h = state.resid_mid[layer].to(device).float()
            logits = (gain * (h - mean) / scale + bias) @ head.weight.float().T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias.float()
            base_logprobs.append(torch.log_softmax(logits, dim=-1))
        for start in range(0, width, neuron_chunk):
            stop = min(start + neuron_chunk, width)
            directions = head.weight @ (values[:, start:stop] * gain.to(dtype)[:, None])  # (vocab, c)
            directions = directions.float()
            for p, (state, target, (_, _, scale, _)) in enumerate(zip(states, target_ids, affines)):
                coeff = state.activations[layer, start:stop].to(device).float() / scale  # (c,)
                shift = directions * coeff[None, :]  # logit change per (token, neuron)
                # Imp = shift[w] - log Σ_v p(v|h) exp(shift[v]): no cancellation of large terms
                lse = torch.logsumexp(base_logprobs[p][:, None] + shift, dim=0)
                result[p, layer, start:stop] = (shift[target] - lse).cpu()
    return result
