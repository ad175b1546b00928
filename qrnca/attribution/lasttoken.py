"""Running only the last token of a prompt through a decoder, against a shared prefix cache.

In a causal decoder nothing at earlier positions depends on the last one (method.md §9), so the
keys and values of the prefix (all tokens but the last) are the same whatever is done to the last
position's FFN activations. `LastTokenRunner` computes them once per prompt with the model's own
forward (`use_cache=True`) and then runs any number of last-token rows through individual layers,
each row attending to the SHARED prefix keys/values (broadcast, never copied per row) and to its
own new key/value.

The layer pieces are the model's own Hugging Face submodules called as functions (norms,
projections, activation, rotary embedding at position T-1), so biases, RMSNorm variants and
embedding scales come from the model itself; only the attention of one query against
[prefix ; itself] is written here (grouped-query heads are grouped onto their kv head, the softmax
is taken in float32). Supported families: llama, mistral, qwen2, qwen3, gemma ("rope" kind) and
gpt2 (learned positions, fused qkv). Others raise `UnsupportedModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import layouts
from ..errors import InputError
from .common import CleanState, target_probability

ROPE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma")
FAST_FAMILIES = ROPE_FAMILIES + ("gpt2",)


class UnsupportedModelError(InputError):
    """The fast last-token method does not know this model family's layer structure."""


def supports_fast(model: nn.Module) -> bool:
    try:
        _family(model)
    except UnsupportedModelError:
        return False
    return True


def _family(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAST_FAMILIES:
        raise UnsupportedModelError(
            f"the fast last-token attribution supports model families {list(FAST_FAMILIES)}; "
            f"{type(model).__name__} has config.model_type={model_type!r}. Use the reference "
            "method (qrnca.attribution.reference_ig) for it"
        )
    for attr in ("final_logit_softcapping", "attn_logit_softcapping"):
        if getattr(config, attr, None):
            raise UnsupportedModelError(f"{type(model).__name__}: {attr} is not supported by the fast method")
    if model_type in ROPE_FAMILIES:
        layer = layouts.decoder_layers(model)[0]
        needed = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
        extra = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
        if (not all(hasattr(layer, a) for a in needed) or any(hasattr(layer, a) for a in extra)
                or not all(hasattr(layer.mlp, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))):
            raise UnsupportedModelError(
                f"{type(model).__name__}: decoder layer {type(layer).__name__} does not have the "
                "Llama structure (input_layernorm, self_attn, post_attention_layernorm, GLU mlp)"
            )
        return "rope"
    return "gpt2"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class PromptContext:
    """Per-prompt constants shared by every row: the prefix keys/values of each layer
    ((kv_heads, P, head_dim), already rotated), the embedding of the last token (1, d) and the
    rotary cos/sin at position T-1 (head_dim,)."""

    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]]
    last_embedding: torch.Tensor
    cos: torch.Tensor | None
    sin: torch.Tensor | None
    position: int


def attend_last(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                prefix_v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of each row's single query against [shared prefix ; the row's own key/value].

    q (R, H, hd); k, v (R, KV, hd); prefix_k, prefix_v (KV, P, hd) shared by all rows (the einsum
    broadcasts them; no per-row copy). Query heads are grouped onto their kv head (H = KV × g), as
    grouped-query attention does. Scores and the softmax are computed in float32. Returns (R, H·hd).
    """
    rows, heads, hd = q.shape
    kv = k.shape[1]
    qg = q.reshape(rows, kv, heads // kv, hd) * scale  # scaled first, as SDPA does (fp16 range)
    scores_prefix = torch.einsum("rkgd,kpd->rkgp", qg, prefix_k).float()
    scores_self = (qg.float() * k.float()[:, :, None, :]).sum(-1, keepdim=True)
    weights = torch.softmax(torch.cat([scores_prefix, scores_self], dim=-1), dim=-1)
    weights = weights.to(q.dtype)
    n_prefix = prefix_k.shape[1]
    out = torch.einsum("rkgp,kpd->rkgd", weights[..., :n_prefix], prefix_v)
    out = out + weights[..., n_prefix:] * v[:, :, None, :]
    return out.reshape(rows, heads * hd)


class LastTokenRunner:
    """Layer-by-layer computation of last-token rows of one model (see the module docstring)."""

    def __init__(self, model: nn.Module):
        self.kind = _family(model)
        self.model = model
        self.base = model.base_model
        self.layers = layouts.decoder_layers(model)
        self.final_norm = layouts.final_norm(model)
        self.lm_head = model.get_output_embeddings()
        self.n_layers = len(self.layers)

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
        cos = sin = None
        if self.kind == "rope":
            embedding = self.base.embed_tokens(last)  # (1, 1, d); Gemma scales inside
            positions = torch.tensor([[position]], device=device)
            cos, sin = self.base.rotary_emb(embedding, position_ids=positions)
            cos, sin = cos.reshape(-1), sin.reshape(-1)
        else:
            positions = torch.tensor([[position]], device=device)
            embedding = self.base.drop(self.base.wte(last) + self.base.wpe(positions))
        if not prefix_kv:
            prefix_kv = [self._empty_kv(layer, embedding) for layer in range(self.n_layers)]
        return PromptContext(prefix_kv, embedding[:, 0], cos, sin, position)

    def _empty_kv(self, layer: int, embedding: torch.Tensor):
        attn = self.layers[layer].self_attn if self.kind == "rope" else self.layers[layer].attn
        if self.kind == "rope":
            kv_heads = attn.k_proj.weight.shape[0] // attn.head_dim
            hd = attn.head_dim
        else:
            kv_heads, hd = attn.num_heads, attn.head_dim
        empty = embedding.new_zeros(kv_heads, 0, hd)
        return empty, empty

    # ---- per layer --------------------------------------------------------------------------
    def attention(self, layer: int, x: torch.Tensor, ctx: PromptContext) -> torch.Tensor:
        """Attention output (R, d) of rows with residual x (R, d) at `layer` (before the residual
        add)."""
        block = self.layers[layer]
        prefix_k, prefix_v = ctx.prefix_kv[layer]
        rows = x.shape[0]
        if self.kind == "rope":
            attn = block.self_attn
            hd = attn.head_dim
            normed = block.input_layernorm(x)
            q = attn.q_proj(normed).view(rows, -1, hd)
            k = attn.k_proj(normed).view(rows, -1, hd)
            v = attn.v_proj(normed).view(rows, -1, hd)
            if hasattr(attn, "q_norm"):  # Qwen3 normalises each head before the rotation
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q * ctx.cos + _rotate_half(q) * ctx.sin
            k = k * ctx.cos + _rotate_half(k) * ctx.sin
            out = attend_last(q, k, v, prefix_k, prefix_v, attn.scaling)
            return attn.o_proj(out)
        attn = block.attn
        normed = block.ln_1(x)
        q, k, v = attn.c_attn(normed).split(attn.split_size, dim=-1)
        hd = attn.head_dim
        q, k, v = (t.reshape(rows, -1, hd) for t in (q, k, v))
        out = attend_last(q, k, v, prefix_k, prefix_v, attn.scaling)
        return attn.resid_dropout(attn.c_proj(out))

    def activation(self, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """The FFN neurons (input of the down projection) for post-attention residual (R, d)."""
        block = self.layers[layer]
        if self.kind == "rope":
            mlp = block.mlp
            normed = block.post_attention_layernorm(resid_mid)
            return mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed)
        mlp = block.mlp
        return mlp.act(mlp.c_fc(block.ln_2(resid_mid)))

    def down(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        mlp = self.layers[layer].mlp
        if self.kind == "rope":
            return mlp.down_proj(h)
        return mlp.dropout(mlp.c_proj(h))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(x))

    # ---- the clean pass ---------------------------------------------------------------------
    @torch.no_grad()
    def clean_pass(self, ctx: PromptContext, target_id: int) -> CleanState:
        """The unmodified last token: per layer the post-attention residual and the neurons, the
        final residual and the target probability."""
        x = ctx.last_embedding
        mids, acts = [], []
        for layer in range(self.n_layers):
            mid = x + self.attention(layer, x, ctx)
            h = self.activation(layer, mid)
            x = mid + self.down(layer, h)
            mids.append(mid[0])
            acts.append(h[0])
        p0 = float(target_probability(self.logits(x), target_id)[0])
        return CleanState(activations=torch.stack(acts), resid_mid=torch.stack(mids),
                          final_resid=x[0], p0=p0)


def last_token_state(model: nn.Module, input_ids: torch.Tensor, target_id: int) -> CleanState:
    """The clean state of one prompt (1, T) from one prefix pass plus one last-token pass."""
    runner = LastTokenRunner(model)
    with torch.no_grad():
        ctx = runner.prepare(input_ids)
    return runner.clean_pass(ctx, target_id)
