"""Everything this project knows about a model family, in one registry.

A *family* is a Hugging Face `config.model_type`. Its entry says where the neurons are (the input
of each decoder layer's FFN down projection, docs/method.md §1), where the final norm is, how the
norms compute, and — for families the fast last-token method supports (docs/method.md §9) — the
names of the submodules of one decoder layer in the order the layer uses them. Every module that
needs a family-specific fact reads it from here: `qrnca.models.layouts` (neuron access), the last-token
runner of the fast attribution, the log-probability increase and Table 5's vocabulary projection.

Adding a Llama-like family is one `register(...)` call (or one entry below) naming its paths; a
family without a `fast` block is still attributed, by the reference algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownLayoutError


@dataclass(frozen=True)
class DecoderBlock:
    """The submodules of one decoder layer, by attribute name, as the fast runner calls them.

    `style` "rope": separate q/k/v/o projections (`self_attn`), rotary positions from the base
    model's `rotary_emb`, a GLU FFN (`mlp.gate_proj`, `mlp.up_proj`, `mlp.act_fn`,
    `mlp.down_proj`). `style` "gpt2": fused `attn.c_attn`, learned positions (`wte` + `wpe`), FFN
    `mlp.c_fc` → `mlp.act` → `mlp.c_proj`.
    """

    style: str
    attn_norm: str  # the norm before attention
    ffn_norm: str  # the norm before the FFN
    attn_out_norm: str | None = None  # a norm on the attention output before the residual add
    rotary_per_layer_type: bool = False  # one rotary embedding per config.layer_types entry


@dataclass(frozen=True)
class Family:
    """One model family (module paths are dotted attribute paths)."""

    layers: str  # the ModuleList of decoder layers, from the *ForCausalLM module
    down_proj: str  # the FFN down projection, relative to one decoder layer
    final_norm: str  # the norm before the unembedding, from the *ForCausalLM module
    ffn_out_norm: str | None = None  # a norm on the FFN output before the residual add (Gemma 2/3)
    norm_plus_one: bool = False  # its RMSNorm computes x̂ · (1 + weight) instead of x̂ · weight
    transposed_weight: bool = False  # GPT-2's Conv1D stores (in, out) instead of (out, in)
    flattened: bool = False  # OPT reshapes (batch, seq, d) to (batch*seq, d) inside its FFN
    fast: DecoderBlock | None = None  # None: only the reference attribution


_LLAMA_BLOCK = DecoderBlock("rope", attn_norm="input_layernorm", ffn_norm="post_attention_layernorm")
_LLAMA = Family("model.layers", "mlp.down_proj", "model.norm", fast=_LLAMA_BLOCK)
_GEMMA2_BLOCK = DecoderBlock("rope", attn_norm="input_layernorm", ffn_norm="pre_feedforward_layernorm",
                             attn_out_norm="post_attention_layernorm")

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": Family("model.layers", "mlp.down_proj", "model.norm", norm_plus_one=True,
                    fast=_LLAMA_BLOCK),
    "gemma2": Family("model.layers", "mlp.down_proj", "model.norm", norm_plus_one=True,
                     ffn_out_norm="post_feedforward_layernorm", fast=_GEMMA2_BLOCK),
    "gemma3_text": Family("model.layers", "mlp.down_proj", "model.norm", norm_plus_one=True,
                          ffn_out_norm="post_feedforward_layernorm",
                          fast=DecoderBlock("rope", attn_norm="input_layernorm",
                                            ffn_norm="pre_feedforward_layernorm",
                                            attn_out_norm="post_attention_layernorm",
                                            rotary_per_layer_type=True)),
    "olmo": Family("model.layers", "mlp.down_proj", "model.norm"),
    "phi": Family("model.layers", "mlp.fc2", "model.final_layernorm"),
    "gpt2": Family("transformer.h", "mlp.c_proj", "transformer.ln_f", transposed_weight=True,
                   fast=DecoderBlock("gpt2", attn_norm="ln_1", ffn_norm="ln_2")),
    "gpt_neox": Family("gpt_neox.layers", "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm"),
    "opt": Family("model.decoder.layers", "fc2", "model.decoder.final_layer_norm", flattened=True),
}


def register(model_type: str, family: Family) -> None:
    """Register (or replace) the family of `config.model_type == model_type`."""
    if not isinstance(family, Family):
        raise TypeError(f"expected a qrnca.models.families.Family, got {type(family).__name__}")
    FAMILIES[model_type] = family


def model_type_of(model) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def family_of(model) -> Family:
    """The registered family of `model`; an unknown one is an error that says how to add it."""
    model_type = model_type_of(model)
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnknownLayoutError(
            f"no model family is registered for model class {type(model).__name__} "
            f"(config.model_type={model_type!r}). Known: {sorted(FAMILIES)}. To add it: "
            "qrnca.models.families.register(model_type, Family(layers=<dotted path of the decoder layer "
            "list>, down_proj=<path of the FFN down projection inside one layer>, "
            "final_norm=<path of the final norm>, ...)); see qrnca/models/families.py"
        )
    return family
