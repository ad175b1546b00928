"""Yu & Ananiadou's log-probability increase of every FFN neuron (docs/method.md §5), exactly.

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

Families that normalise the FFN output before adding it to the residual (Gemma 2 / 3,
`Family.ffn_out_norm`): the natural extension, in the same spirit as the frozen final norm, freezes
that norm's statistics at the clean FFN output y of the layer, so each neuron adds exactly
m · (g' ⊙ v) / s' (g' its gain, s' = rms(y)) and the directions become W_U diag(g ⊙ g') V_l with
the per-prompt scalar 1 / (s s'). Final-logit soft-capping (Gemma 2) is applied to the shifted
logits as the model does (cap · tanh(z / cap)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..models import layouts
from ..models.families import family_of
from .common import CleanState, check_prompt, model_device, target_probability

#: Elements of one (vocab × neurons) direction block (float32): bounds its memory.
BLOCK_ELEMENTS = 1 << 25
#: Vocabulary entries per block of `log_mean_exp` (a block of directions stays in cache).
VOCAB_BLOCK = 1024
#: Neurons per exact block of `logprob_top_k`. The bounds leave few candidates per layer (~2-3 %
#: of the neurons on the bench model), so a block as wide as `neuron_chunk_for` would be mostly
#: padding (on the bench model 1048 columns for ~70 candidates: 7 of 13 s per query were spent
#: on it); the width is fixed so that a column's value does not depend on its neighbours.
TOP_K_BLOCK = 64
#: Floor of the exponents in `log_mean_exp` (e^-80 ≈ 1.8e-35 is still a normal float32).
EXP_FLOOR = -80.0
#: A `log_mean_exp` sum this small is recomputed exactly (the floor adds < 1e-29 to any sum).
UNDERFLOW = 1e-20


def _norm_affine(norm: nn.Module, x0: torch.Tensor, plus_one: bool):
    """(gain g, shift μ, scale s, bias b) of `norm` with statistics frozen at x0 (d,), float32.
    `plus_one`: the norm multiplies by (1 + weight) (Gemma's RMSNorm)."""
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
        raise InputError(f"cannot freeze the statistics of norm {type(norm).__name__}")
    if plus_one:
        gain = 1.0 + gain
    scale = torch.sqrt((x ** 2).mean() + eps)
    return gain, torch.zeros((), device=x.device), scale, bias


@dataclass
class _Readout:
    """The unembedding side of the model, cast once: W_U (vocab, d) float32, its bias, the final
    norm and soft-cap."""

    head: torch.Tensor
    bias: torch.Tensor | None
    norm: nn.Module
    plus_one: bool
    softcap: float | None

    @classmethod
    def of(cls, model: nn.Module) -> "_Readout":
        head = model.get_output_embeddings()
        bias = getattr(head, "bias", None)
        return cls(head.weight.float(), None if bias is None else bias.float(),
                   layouts.final_norm(model), family_of(model).norm_plus_one,
                   getattr(model.config, "final_logit_softcapping", None) or None)

    def capped(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap

    def affine(self, final_resid: torch.Tensor):
        return _norm_affine(self.norm, final_resid.to(self.head.device), self.plus_one)

    def raw_logits(self, x: torch.Tensor, affine) -> torch.Tensor:
        """Logits before soft-capping of residual(s) x (…, d) through the frozen norm."""
        gain, mean, scale, bias = affine
        out = (gain * (x.float() - mean) / scale + bias) @ self.head.T
        return out if self.bias is None else out + self.bias


def frozen_norm_logits(model: nn.Module, final_resid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits (…, vocab) of residual(s) x read through the final norm with statistics frozen at
    `final_resid`, then the unembedding (and soft-cap); float32. At x = final_resid it equals the
    model."""
    readout = _Readout.of(model)
    return readout.capped(readout.raw_logits(x, readout.affine(final_resid)))


@torch.no_grad()
def hooked_clean_state(model: nn.Module, input_ids: torch.Tensor, target_id: int) -> CleanState:
    """The clean state from one full forward with hooks, for any registered family: the neurons
    (down-projection input), h_l = decoder layer output − what the FFN added (the residual
    without this FFN's contribution; equal to the post-attention residual for sequential blocks),
    the raw FFN output where the family normalises it, and the input of the final norm, all at
    the last position."""
    vocab = model.get_output_embeddings().weight.shape[0]
    input_ids = check_prompt(input_ids, target_id, vocab).to(model_device(model))
    projections = layouts.down_projections(model)
    blocks = layouts.decoder_layers(model)
    out_norms = layouts.ffn_out_norms(model)
    n_tokens = input_ids.shape[1]
    acts, downs, added, outs, final = {}, {}, {}, {}, {}

    def last(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2:  # flattened (batch*seq, d) inside OPT's FFN; batch is 1
            return t[n_tokens - 1]
        return t[0, -1]

    def on_down(layer):
        def hook(module, args, output):
            acts[layer] = last(args[0]).detach().clone()
            downs[layer] = last(output).detach().clone()
        return hook

    def on_out_norm(layer):
        def hook(module, args, output):
            added[layer] = last(output).detach().clone()
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
    if out_norms is not None:
        handles += [n.register_forward_hook(on_out_norm(l)) for l, n in enumerate(out_norms)]
    handles.append(layouts.final_norm(model).register_forward_pre_hook(on_norm))
    try:
        logits = model(input_ids=input_ids, logits_to_keep=1, use_cache=False).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    layers = range(len(projections))
    if out_norms is None:
        added = downs
    return CleanState(
        activations=torch.stack([acts[l] for l in layers]),
        resid_mid=torch.stack([outs[l] - added[l] for l in layers]),
        final_resid=final["x"],
        p0=float(target_probability(logits, target_id)[0]),
        ffn_output=None if out_norms is None else torch.stack([downs[l] for l in layers]),
    )


def log_mean_exp(directions: torch.Tensor, logp: torch.Tensor, coeffs: torch.Tensor, *,
                 rows: int = VOCAB_BLOCK) -> torch.Tensor:
    """log Σ_v p_p(v) exp(c_pi D_vi) for every prompt p and neuron i: (P, c) float32.

    `directions` D (vocab, c), `logp` (P, vocab) log-probabilities, `coeffs` (P, c). Exact and
    cheap: with M_pi = max_v c_pi D_vi (from the column extremes of D) and log p' = log p − max
    log p, the sum is max log p + M_pi + log Σ_v exp(log p'_v + c_pi D_vi − M_pi), where every
    exponent is ≤ 0. It is computed over blocks of `rows` vocabulary entries (each block of D
    stays in cache while every prompt uses it), summed in float64. Exponents are floored at
    `EXP_FLOOR` so that no term is a subnormal float (which costs ~7x on x86 CPUs); that adds at
    most vocab · e^EXP_FLOOR (< 1e-29) to a sum, so a column whose sum is below `UNDERFLOW`
    (nothing significant left in float32's range) is recomputed with a plain logsumexp."""
    col_max, col_min = directions.max(dim=0).values, directions.min(dim=0).values
    top = torch.maximum(coeffs * col_max, coeffs * col_min)  # (P, c): M
    logp_max = logp.max(dim=1).values  # (P,)
    shifted = logp - logp_max[:, None]  # log p', at most 0
    sums = torch.zeros(coeffs.shape, dtype=torch.float64, device=coeffs.device)
    for start in range(0, directions.shape[0], rows):
        block = directions[start:start + rows]
        for p in range(coeffs.shape[0]):
            x = torch.addcmul(shifted[p, start:start + rows, None], block, coeffs[p][None, :])
            sums[p] += x.sub_(top[p]).clamp_min_(EXP_FLOOR).exp_().sum(dim=0)
    out = logp_max[:, None] + top + torch.log(sums).float()
    for p, i in (sums < UNDERFLOW).nonzero().tolist():  # rare: recompute exactly
        out[p, i] = torch.logsumexp(logp[p] + coeffs[p, i] * directions[:, i], dim=0)
    return out


def _capped_increase(readout: _Readout, directions: torch.Tensor, raw: torch.Tensor,
                     coeffs: torch.Tensor, target: int, base_target: torch.Tensor) -> torch.Tensor:
    """Imp of a chunk of neurons for one prompt when the logits are soft-capped (Gemma 2): the
    shifted logits go through the cap, so the sum is taken over them directly."""
    shifted = readout.capped(raw[:, None] + directions * coeffs[None, :])
    return shifted[target] - torch.logsumexp(shifted, dim=0) - base_target


def logprob_applicability(model: nn.Module) -> str | None:
    """None when the log-probability increase applies to `model`; otherwise why not. It needs
    the final norm (and any FFN-output norm) to become affine once its statistics are frozen:
    RMSNorm, LayerNorm, or a norm with a known epsilon."""
    norms = [("final norm", layouts.final_norm(model))]
    norms += [(f"layer {l} FFN-output norm", n) for l, n in enumerate(layouts.ffn_out_norms(model) or [])]
    width = model.get_output_embeddings().weight.shape[1]
    probe = torch.ones(width)
    for what, norm in norms:
        try:
            _norm_affine(norm, probe.to(next(model.parameters()).device), False)
        except InputError as exc:
            return (f"{type(model).__name__}: the statistics of its {what} "
                    f"({type(norm).__name__}) cannot be frozen ({exc})")
    return None


def neuron_chunk_for(vocab: int, width: int) -> int:
    """Neurons per block so that a (vocab × chunk) float32 block has at most `BLOCK_ELEMENTS`."""
    return max(1, min(width, BLOCK_ELEMENTS // max(vocab, 1)))


@dataclass
class _Layer:
    """What the log-probability increase of one layer needs for a set of prompts."""

    values: torch.Tensor  # (d, n) down-projection columns, model dtype
    gains: torch.Tensor  # (d,) final-norm gain (x FFN-output-norm gain), float32
    coeffs: torch.Tensor  # (P, n) c = activation / frozen scale(s), float32
    raw: torch.Tensor  # (P, vocab) logits of h_l before soft-capping
    base: torch.Tensor  # (P, vocab) log p(. | h_l)

    def directions(self, weight: torch.Tensor, columns) -> torch.Tensor:
        """D (vocab, c) = W_U diag(gains) V[:, columns], float32."""
        return (weight @ (self.values[:, columns] * self.gains.to(weight.dtype)[:, None])).float()


class _Setup:
    """The per-prompt constants of a set of prompts (frozen norm statistics, targets)."""

    def __init__(self, model: nn.Module, states: Sequence[CleanState], target_ids: Sequence[int]):
        if len(states) != len(target_ids) or not states:
            raise InputError("logprob_increase needs one target id per clean state (and at least "
                             "one)")
        self.model, self.states = model, list(states)
        self.weight = model.get_output_embeddings().weight
        self.device = self.weight.device
        self.readout = _Readout.of(model)
        self.out_norms = layouts.ffn_out_norms(model)
        self.affines = [self.readout.affine(s.final_resid) for s in states]
        self.target_ids = list(target_ids)
        self.targets = torch.tensor(self.target_ids, device=self.device)
        self.shape = layouts.grid_shape(model)

    def layer(self, layer: int) -> _Layer:
        gains = self.affines[0][0]
        scales = torch.stack([a[2] for a in self.affines])  # (P,) final-norm scale per prompt
        if self.out_norms is not None:
            post = [_norm_affine(self.out_norms[layer], s.ffn_output[layer].to(self.device),
                                 self.readout.plus_one) for s in self.states]
            gains = gains * post[0][0]
            scales = scales * torch.stack([a[2] for a in post])
        raw = torch.stack([self.readout.raw_logits(s.resid_mid[layer].to(self.device), a)
                           for s, a in zip(self.states, self.affines)])
        acts = torch.stack([s.activations[layer].to(self.device).float() for s in self.states])
        return _Layer(layouts.down_proj_weight(self.model, layer), gains, acts / scales[:, None],
                      raw, torch.log_softmax(self.readout.capped(raw), dim=-1))

    def increase(self, layer: _Layer, columns) -> torch.Tensor:
        """Exact Imp (P, c) of the neurons `columns` of a layer for every prompt."""
        directions = layer.directions(self.weight, columns)
        coeffs = layer.coeffs[:, columns]
        if self.readout.softcap is None:
            # Imp = shift[w] - log Σ_v p(v|h) exp(shift[v]), shift = coeff * direction
            return coeffs * directions[self.targets] - log_mean_exp(directions, layer.base, coeffs)
        base_target = layer.base.gather(1, self.targets[:, None])[:, 0]
        return torch.stack([_capped_increase(self.readout, directions, layer.raw[p], coeffs[p],
                                             self.target_ids[p], base_target[p])
                            for p in range(len(self.states))])


@torch.no_grad()
def logprob_increase(model: nn.Module, states: Sequence[CleanState], target_ids: Sequence[int], *,
                     neuron_chunk: int | None = None) -> torch.Tensor:
    """Imp(l, i) of every neuron for each prompt: (prompts, L, n) float32 on the CPU.

    `states` come from `fast_ig(...).state`, `last_token_state` or `hooked_clean_state`. Give as
    many prompts at once as memory allows: the direction matrix of each layer (vocab × d × n) is
    computed once for all of them, `neuron_chunk` neurons at a time (default:
    `neuron_chunk_for(vocab, n)`), in the model's dtype (float32 softmax and accumulation).
    `logprob_top_k` gives the top neurons of each query exactly at a fraction of the cost.
    """
    setup = _Setup(model, states, target_ids)
    n_layers, width = setup.shape
    chunk = neuron_chunk or neuron_chunk_for(setup.readout.head.shape[0], width)
    result = torch.empty(len(states), n_layers, width, dtype=torch.float32)
    for layer in range(n_layers):
        prepared = setup.layer(layer)
        for start in range(0, width, chunk):
            columns = slice(start, min(start + chunk, width))
            result[:, layer, columns] = setup.increase(prepared, columns).cpu()
    return result


@torch.no_grad()
def direction_ranges(model: nn.Module, *, neuron_chunk: int | None = None) -> torch.Tensor:
    """(L, n) float32: for every neuron, max_v D_vi − min_v D_vi of its direction column
    D = W_U diag(g ⊙ g'_l) V_l (final-norm and FFN-output-norm gains; the per-prompt norm scales
    are not in it). Depends on the weights only: computed once per job for `logprob_top_k`."""
    weight = model.get_output_embeddings().weight
    device = weight.device
    readout = _Readout.of(model)
    n_layers, width = layouts.grid_shape(model)
    chunk = neuron_chunk or neuron_chunk_for(weight.shape[0], width)
    probe = torch.ones(weight.shape[1], device=device)
    gain = _norm_affine(readout.norm, probe, readout.plus_one)[0]
    out_norms = layouts.ffn_out_norms(model)
    ranges = torch.empty(n_layers, width, dtype=torch.float32)
    for layer in range(n_layers):
        gains = gain
        if out_norms is not None:
            gains = gain * _norm_affine(out_norms[layer], probe, readout.plus_one)[0]
        values = layouts.down_proj_weight(model, layer)
        for start in range(0, width, chunk):
            columns = slice(start, min(start + chunk, width))
            block = (weight @ (values[:, columns] * gains.to(weight.dtype)[:, None])).float()
            ranges[layer, columns] = (block.max(dim=0).values - block.min(dim=0).values).cpu()
    return ranges


def write_ranges(path, ranges: torch.Tensor | None) -> None:
    """Save direction ranges as .npy, atomically; None (the method does not apply to the
    model) is saved as an empty (0, 0) array."""
    import numpy as np

    from ..io import atomic_path

    array = np.zeros((0, 0), dtype=np.float32) if ranges is None else ranges.numpy()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def read_ranges(path, model: nn.Module) -> torch.Tensor | None:
    """Direction ranges saved by `write_ranges` for `model` (None when saved as not applicable);
    a shape that is not the model's neuron grid is an error naming the file."""
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a direction-ranges file ({exc})") from None
    if array.size == 0:
        return None
    if tuple(array.shape) != tuple(layouts.grid_shape(model)):
        raise InputError(f"{path}: direction ranges of shape {array.shape}, but the model's neuron "
                         f"grid is {layouts.grid_shape(model)}; rebuild it")
    return torch.from_numpy(array)


@torch.no_grad()
def logprob_top_k(model: nn.Module, states: Sequence[Sequence[CleanState]],
                  target_ids: Sequence[Sequence[int]], k: int, ranges: torch.Tensor) -> list[torch.Tensor]:
    """For each query (its prompts' clean states and gold ids): Imp summed over its prompts,
    exact for every neuron that can be among the top `k`, −inf for the others: (L, n) float32.

    Bounds prune the exact work. For prompt p and neuron i with c = activation / frozen scale,
    Jensen and Hoeffding's lemma bound log E_p[exp(c D_i)] between c μ_i and c μ_i + c² R_i² / 8,
    μ_i = E_p[D_i] (= (p W_U) · u_i, no vocabulary × neurons product needed) and R_i the column's
    range (`direction_ranges`), so Imp_i lies in [c (D_wi − μ_i) − c² R_i² / 8, c (D_wi − μ_i)].
    A neuron whose upper bound (summed over the query's prompts) is below the k-th largest lower
    bound cannot be in the top k; the rest is computed exactly (`increase`), for all prompts of
    the batch at once, in chunks of a fixed width so that an exact value does not depend on which
    queries share the batch (the batch size is an execution setting). Soft-capped models
    (Gemma 2) are computed in full."""
    flat_states = [s for query in states for s in query]
    flat_targets = [t for query in target_ids for t in query]
    owner = [q for q, query in enumerate(states) for _ in query]
    setup = _Setup(model, flat_states, flat_targets)
    n_layers, width = setup.shape
    if setup.readout.softcap is not None or k >= n_layers * width:
        full = logprob_increase(model, flat_states, flat_targets)
        return list(torch.stack([full[[i for i, o in enumerate(owner) if o == q]].sum(dim=0)
                                 for q in range(len(states))]))
    rows = [[i for i, o in enumerate(owner) if o == q] for q in range(len(states))]

    def per_query(values: torch.Tensor) -> torch.Tensor:  # (P, ...) -> (Q, ...): each query's sum
        return torch.stack([values[r].sum(dim=0) for r in rows])

    weight = setup.weight.float() if setup.weight.dtype != torch.float32 else setup.weight
    layers, upper, lower = [], [], []
    for layer in range(n_layers):
        prepared = setup.layer(layer)
        u = prepared.values.float() * prepared.gains[:, None]  # (d, n)
        mu = (prepared.base.exp() @ weight) @ u  # (P, n) E_p[D_i]
        first = prepared.coeffs * (weight[setup.targets] @ u - mu)
        width_bound = prepared.coeffs ** 2 * ranges[layer].to(setup.device) ** 2 / 8
        upper.append(per_query(first))
        lower.append(per_query(first - width_bound))
        layers.append(prepared)
    upper, lower = torch.stack(upper, dim=1), torch.stack(lower, dim=1)  # (Q, L, n)
    kth = lower.reshape(len(states), -1).topk(k, dim=1).values[:, -1]  # (Q,)
    slack = 1e-4 * (upper.abs().amax(dim=(1, 2)) + lower.abs().amax(dim=(1, 2))) + 1e-6
    candidate = upper >= (kth - slack)[:, None, None]  # (Q, L, n)
    result = torch.full((len(states), n_layers, width), float("-inf"))
    chunk = min(TOP_K_BLOCK, neuron_chunk_for(setup.readout.head.shape[0], width))
    for layer, prepared in enumerate(layers):
        columns = candidate[:, layer].any(dim=0).nonzero()[:, 0]
        for start in range(0, len(columns), chunk):
            part = columns[start:start + chunk]
            # Always `chunk` columns (the last one repeated): a column's matrix product then does
            # not depend on which other columns share its chunk, nor its value on the batch.
            padded = torch.cat([part, part[-1:].expand(chunk - len(part))])
            exact = setup.increase(prepared, padded)[:, :len(part)]
            result[:, layer, part.cpu()] = per_query(exact).cpu()
    return list(result)
