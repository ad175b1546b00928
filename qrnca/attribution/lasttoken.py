"""Running only the last token of a prompt through a decoder, against a shared prefix cache.

In a causal decoder nothing at earlier positions depends on the last one (docs/method.md §9), so the
keys and values of the prefix (all tokens but the last) are the same whatever is done to the last
position's FFN activations. `LastTokenRunner` computes them once per prompt with the model's own
forward (`use_cache=True`) and then runs any number of last-token rows through individual layers,
each row attending to the SHARED prefix keys/values (broadcast, never copied per row) and to its
own new key/value. Rows of several prompts can run together (`attention` with row counts): the
row-wise pieces run once for all of them, the rotary angles and the attention per prompt, against
that prompt's own prefix (whatever its length), so a row never sees another prompt.

The layer pieces are the model's own Hugging Face submodules called as functions (norms,
projections, activation, rotary embedding at position T-1), so biases, RMSNorm variants and
embedding scales come from the model itself; only the attention of one query against
[prefix ; itself] is written here (grouped-query heads are grouped onto their kv head, the softmax
is taken in float32). Which families are supported, and what one of their decoder layers computes,
is registered in `qrnca.models.families` (`Family.fast`); others raise `UnsupportedModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..models import families, layouts
from ..models.families import DecoderBlock
from .common import CleanState, target_probability


class UnsupportedModelError(InputError):
    """The fast last-token method does not know this model family's layer structure."""


def fast_families() -> list[str]:
    """The registered families (`qrnca.models.families`) that the fast method supports."""
    return sorted(name for name, family in families.FAMILIES.items() if family.fast is not None)


def supports_fast(model: nn.Module) -> bool:
    try:
        _block(model)
    except UnsupportedModelError:
        return False
    return True


def _block(model: nn.Module) -> DecoderBlock:
    """The decoder-block description of `model`'s family, checked against its first layer."""
    family = families.family_of(model)
    block = family.fast
    if block is None:
        raise UnsupportedModelError(
            f"the fast last-token attribution supports model families {fast_families()}; "
            f"{type(model).__name__} has config.model_type={families.model_type_of(model)!r}. Use "
            "the reference method (qrnca.attribution.reference_ig) for it"
        )
    layer = layouts.decoder_layers(model)[0]
    names = [block.attn_norm, block.ffn_norm, block.attn_out_norm, family.ffn_out_norm]
    attn, ffn = (("self_attn", ("gate_proj", "up_proj", "down_proj", "act_fn")) if block.style == "rope"
                 else ("attn", ("c_fc", "act", "c_proj")))
    missing = [n for n in names + [attn, "mlp"] if n is not None and not hasattr(layer, n)]
    missing += [f"mlp.{n}" for n in ffn if hasattr(layer, "mlp") and not hasattr(layer.mlp, n)]
    if missing:
        raise UnsupportedModelError(
            f"{type(model).__name__}: decoder layer {type(layer).__name__} lacks {missing}, which "
            f"the registered {block.style!r} block of model_type "
            f"{families.model_type_of(model)!r} names (qrnca.models.families)"
        )
    return block


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class PromptContext:
    """Per-prompt constants shared by every row: the prefix keys/values of each layer
    ((kv_heads, P, head_dim), already rotated; only the window for sliding-window layers), the
    embedding of the last token (1, d) and, for rotary families, each layer's cos/sin at position
    T-1 ((head_dim,) each)."""

    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]]
    last_embedding: torch.Tensor
    rotary: list[tuple[torch.Tensor, torch.Tensor]] | None
    position: int


def attend_last(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                prefix_v: torch.Tensor, scale: float, softcap: float | None = None) -> torch.Tensor:
    """Attention of each row's single query against [shared prefix ; the row's own key/value].

    q (R, H, hd); k, v (R, KV, hd); prefix_k, prefix_v (KV, P, hd) shared by all rows (the einsum
    broadcasts them; no per-row copy). Query heads are grouped onto their kv head (H = KV × g), as
    grouped-query attention does. Scores and the softmax are computed in float32; `softcap`
    (Gemma 2) caps the scores at ±softcap with tanh before the softmax. Returns (R, H·hd).
    """
    rows, heads, hd = q.shape
    kv = k.shape[1]
    qg = q.reshape(rows, kv, heads // kv, hd) * scale  # scaled first, as SDPA does (fp16 range)
    scores_prefix = torch.einsum("rkgd,kpd->rkgp", qg, prefix_k).float()
    scores_self = (qg.float() * k.float()[:, :, None, :]).sum(-1, keepdim=True)
    scores = torch.cat([scores_prefix, scores_self], dim=-1)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    weights = torch.softmax(scores, dim=-1).to(q.dtype)
    n_prefix = prefix_k.shape[1]
    out = torch.einsum("rkgp,kpd->rkgd", weights[..., :n_prefix], prefix_v)
    out = out + weights[..., n_prefix:] * v[:, :, None, :]
    return out.reshape(rows, heads * hd)


class LastTokenRunner:
    """Layer-by-layer computation of last-token rows of one model (see the module docstring).

    What a layer computes comes from the family's `DecoderBlock` (`qrnca.models.families`): which norms
    surround attention and the FFN, and how positions enter."""

    def __init__(self, model: nn.Module):
        self.block = _block(model)
        self.model = model
        self.config = model.config
        self.base = model.base_model
        self.layers = layouts.decoder_layers(model)
        self.final_norm = layouts.final_norm(model)
        self.ffn_out_norms = layouts.ffn_out_norms(model)
        self.lm_head = model.get_output_embeddings()
        self.n_layers = len(self.layers)
        self.rope = self.block.style == "rope"
        self.attn_softcap = getattr(self.config, "attn_logit_softcapping", None)
        self.final_softcap = getattr(self.config, "final_logit_softcapping", None)

    def _attn(self, layer: int) -> nn.Module:
        return self.layers[layer].self_attn if self.rope else self.layers[layer].attn

    # ---- per prompt -------------------------------------------------------------------------
    def prepare(self, input_ids: torch.Tensor) -> PromptContext:
        """One forward of the prefix with the model's own code (cache on) and the last token's
        embedding and rotary angles."""
        n_tokens = input_ids.shape[1]
        position = n_tokens - 1
        device = input_ids.device
        prefix_kv = []
        if n_tokens > 1:
            out = self.base(input_ids=input_ids[:, :-1], use_cache=True)
            cache = out.past_key_values
            for layer in range(self.n_layers):
                entry = cache.layers[layer]
                keys, values = entry.keys[0], entry.values[0]
                window = getattr(entry, "sliding_window", None)
                if getattr(entry, "is_sliding", False) and window:
                    # the last query sees itself and the window-1 tokens before it
                    start = max(keys.shape[1] - (window - 1), 0)
                    keys, values = keys[:, start:], values[:, start:]
                prefix_kv.append((keys, values))
        last = input_ids[:, -1:]
        positions = torch.tensor([[position]], device=device)
        rotary = None
        if self.rope:
            embedding = self.base.embed_tokens(last)  # (1, 1, d); Gemma scales inside
            rotary = self._rotary(embedding, positions)
        else:
            embedding = self.base.drop(self.base.wte(last) + self.base.wpe(positions))
        if not prefix_kv:
            prefix_kv = [self._empty_kv(layer, embedding) for layer in range(self.n_layers)]
        return PromptContext(prefix_kv, embedding[:, 0], rotary, position)

    def _rotary(self, embedding: torch.Tensor, positions: torch.Tensor):
        """Each layer's (cos, sin) at the last position: one rotary embedding for the model, or
        (Gemma 3) one per layer type, e.g. local sliding-window vs global layers."""
        def angles(*layer_type):
            cos, sin = self.base.rotary_emb(embedding, positions, *layer_type)
            return cos.reshape(-1), sin.reshape(-1)

        if not self.block.rotary_per_layer_type:
            return [angles()] * self.n_layers
        types = list(self.config.layer_types[: self.n_layers])
        by_type = {t: angles(t) for t in dict.fromkeys(types)}
        return [by_type[t] for t in types]

    def _empty_kv(self, layer: int, embedding: torch.Tensor):
        attn = self._attn(layer)
        if self.rope:
            kv_heads = attn.k_proj.weight.shape[0] // attn.head_dim
        else:
            kv_heads = attn.num_heads
        empty = embedding.new_zeros(kv_heads, 0, attn.head_dim)
        return empty, empty

    # ---- per layer --------------------------------------------------------------------------
    def attention(self, layer: int, x: torch.Tensor, ctx: PromptContext | Sequence[PromptContext],
                  counts: Sequence[int] | None = None) -> torch.Tensor:
        """Attention output (R, d) of rows with residual x (R, d) at `layer`, as added to the
        residual (after the family's attention-output norm, if any).

        `ctx`: the context of the one prompt all rows belong to, or a sequence of contexts with
        `counts` (the number of rows of each, in order; the rows of one prompt contiguous). The
        projections, norms and everything row-wise run once for all rows; only the rotary angles
        (each prompt's last position) and the attention (each prompt's own prefix, of its own
        length) are taken per prompt, on that prompt's slice of the rows."""
        block = self.layers[layer]
        rows = x.shape[0]
        if isinstance(ctx, PromptContext):
            groups = [(ctx, 0, rows)]
        else:
            if counts is None or len(counts) != len(ctx) or sum(counts) != rows:
                raise ValueError(f"row counts {counts} do not split {rows} rows over "
                                 f"{len(ctx)} prompts")
            starts = [0]
            for count in counts:
                starts.append(starts[-1] + count)
            groups = [(c, s, e) for c, s, e in zip(ctx, starts, starts[1:]) if e > s]
        attn = self._attn(layer)
        hd = attn.head_dim
        normed = getattr(block, self.block.attn_norm)(x)
        outs = []
        if self.rope:
            q = attn.q_proj(normed).view(rows, -1, hd)
            k = attn.k_proj(normed).view(rows, -1, hd)
            v = attn.v_proj(normed).view(rows, -1, hd)
            if hasattr(attn, "q_norm"):  # Qwen3, Gemma 3 normalise each head before the rotation
                q, k = attn.q_norm(q), attn.k_norm(k)
            for c, s, e in groups:
                prefix_k, prefix_v = c.prefix_kv[layer]
                cos, sin = c.rotary[layer]
                qs, ks = q[s:e], k[s:e]
                qs = qs * cos + _rotate_half(qs) * sin
                ks = ks * cos + _rotate_half(ks) * sin
                outs.append(attend_last(qs, ks, v[s:e], prefix_k, prefix_v, attn.scaling,
                                        self.attn_softcap))
            out = attn.o_proj(outs[0] if len(outs) == 1 else torch.cat(outs))
        else:
            q, k, v = attn.c_attn(normed).split(attn.split_size, dim=-1)
            q, k, v = (t.reshape(rows, -1, hd) for t in (q, k, v))
            for c, s, e in groups:
                prefix_k, prefix_v = c.prefix_kv[layer]
                outs.append(attend_last(q[s:e], k[s:e], v[s:e], prefix_k, prefix_v, attn.scaling))
            out = attn.resid_dropout(attn.c_proj(outs[0] if len(outs) == 1 else torch.cat(outs)))
        if self.block.attn_out_norm is not None:
            out = getattr(block, self.block.attn_out_norm)(out)
        return out

    def activation(self, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """The FFN neurons (input of the down projection) for post-attention residual (R, d)."""
        block = self.layers[layer]
        mlp = block.mlp
        normed = getattr(block, self.block.ffn_norm)(resid_mid)
        if self.rope:
            return mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed)
        return mlp.act(mlp.c_fc(normed))

    def down_raw(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """The down projection's output for neurons h (R, n), before any FFN-output norm."""
        mlp = self.layers[layer].mlp
        if self.rope:
            return mlp.down_proj(h)
        return mlp.dropout(mlp.c_proj(h))

    def down(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """What the FFN adds to the residual for neurons h (R, n)."""
        out = self.down_raw(layer, h)
        if self.ffn_out_norms is not None:
            out = self.ffn_out_norms[layer](out)
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.final_norm(x))
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    # ---- the clean pass ---------------------------------------------------------------------
    @torch.no_grad()
    def clean_pass(self, ctx: PromptContext, target_id: int) -> CleanState:
        """The unmodified last token: per layer the post-attention residual, the neurons and (for
        families that normalise the FFN output) the raw FFN output; the final residual and the
        target probability."""
        x = ctx.last_embedding
        mids, acts, raws = [], [], []
        for layer in range(self.n_layers):
            mid = x + self.attention(layer, x, ctx)
            h = self.activation(layer, mid)
            raw = self.down_raw(layer, h)
            x = mid + (raw if self.ffn_out_norms is None else self.ffn_out_norms[layer](raw))
            mids.append(mid[0])
            acts.append(h[0])
            raws.append(raw[0])
        p0 = float(target_probability(self.logits(x), target_id)[0])
        return CleanState(activations=torch.stack(acts), resid_mid=torch.stack(mids),
                          final_resid=x[0], p0=p0,
                          ffn_output=None if self.ffn_out_norms is None else torch.stack(raws))


def last_token_state(model: nn.Module, input_ids: torch.Tensor, target_id: int) -> CleanState:
    """The clean state of one prompt (1, T) from one prefix pass plus one last-token pass."""
    runner = LastTokenRunner(model)
    with torch.no_grad():
        ctx = runner.prepare(input_ids)
    return runner.clean_pass(ctx, target_id)
