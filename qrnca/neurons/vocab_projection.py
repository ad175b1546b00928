"""Table 5: what the common neurons write — their value vectors projected onto the vocabulary.

A neuron (layer l, index i) adds `activation × v` to the residual stream, where v is column i of
layer l's FFN down projection (`qrnca.models.layouts.down_proj_weight`; for Gemma 2 / 3, which
normalise the FFN output, v times that norm's gain). Reading v through the
unembedding, as Geva et al. (2022) do and as the QRNCA paper does for its common neurons
(docs/method.md §8), shows which tokens the neuron promotes:

    logits = W_U · (g ⊙ v)     (`through_norm=True`, the default)
    logits = W_U · v           (`through_norm=False`)

W_U is `model.get_output_embeddings().weight` (vocab × d_model) and g the final norm's scale
(RMSNorm / LayerNorm weight; Gemma's norm multiplies by 1 + weight, which is used for it). The
norm's normalisation itself is a positive scalar per position and does not change the ranking;
a LayerNorm bias and an unembedding bias are the same for every neuron and are left out, so the
score is the neuron's own contribution direction only. A model without a final norm scale (OPT
variants without `final_layer_norm`, `elementwise_affine=False`) projects through g = 1.

The paper found option letters, stop words, month names and punctuation among the top tokens of
its common neurons, mostly in the top layer; `summarize` counts exactly those categories and the
share of common neurons in the top layer, so the claim can be checked on our run.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import InputError
from ..io import write_json
from ..models.families import family_of
from ..models.layouts import down_proj_weight, ffn_out_norms, final_norm, grid_shape

#: Columns of `table5`, in order.
TABLE5_COLUMNS = ("layer", "index", "clusters", "rank", "token_id", "token", "text", "score",
                  "category")

#: Categories of a top token, in the order a token is tested against them (first match wins).
CATEGORIES = ("option_letter", "digit", "punctuation", "month", "stop_word", "whitespace",
              "special", "other")

OPTION_LETTERS = frozenset("ABCD")

#: Month names and their usual abbreviations, lower case ("may" is both; it counts as a month).
MONTHS = frozenset(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december",
     "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
)

#: A small English stop-word list (articles, pronouns, auxiliaries, prepositions, conjunctions).
STOP_WORDS = frozenset(
    """a an the and or but nor so yet if then than that this these those there here
    of in on at to for from by with without about into onto over under between among through
    during before after above below up down out off again further once
    is am are was were be been being have has had having do does did doing will would shall
    should can could may might must
    i me my mine myself you your yours yourself he him his himself she her hers herself it its
    itself we us our ours ourselves they them their theirs themselves
    what which who whom whose when where why how all any both each few more most other some
    such no not only own same too very just also as""".split()
)

#: Word-boundary markers of subword vocabularies (SentencePiece "▁", byte-level BPE "Ġ"/"Ċ").
_MARKERS = "▁Ġ"


def _check_common(common: Mapping, shape: tuple[int, int], source: str) -> list[tuple[int, int, int]]:
    """(layer, index, clusters) of a common.json object, validated against the model's grid."""
    if not isinstance(common, Mapping):
        raise InputError(f"{source}: expected a JSON object, got {type(common).__name__}")
    neurons = common.get("neurons")
    counts = common.get("counts")
    if not isinstance(neurons, list):
        raise InputError(f"{source}: 'neurons' must be a list of [layer, index] pairs")
    if counts is None:
        counts = [None] * len(neurons)
    if not isinstance(counts, list) or len(counts) != len(neurons):
        raise InputError(f"{source}: 'counts' must be a list parallel to 'neurons' "
                         f"({len(neurons)} neurons)")
    n_layers, width = shape
    out = []
    for k, (neuron, count) in enumerate(zip(neurons, counts)):
        if not (isinstance(neuron, (list, tuple)) and len(neuron) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in neuron)):
            raise InputError(f"{source}: neurons[{k}] = {neuron!r} is not a [layer, index] pair")
        layer, index = neuron
        if not (0 <= layer < n_layers and 0 <= index < width):
            raise InputError(f"{source}: neurons[{k}] = {neuron!r} is outside the model's neuron "
                             f"grid {n_layers} x {width}")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise InputError(f"{source}: counts[{k}] = {count!r} is not a non-negative integer")
        out.append((layer, index, count))
    return out


def _gain(norm: nn.Module | None, plus_one: bool) -> torch.Tensor | None:
    """A norm's elementwise scale (d_model,) in float32, or None when it has none."""
    weight = getattr(norm, "weight", None) if norm is not None else None
    if weight is None:
        return None
    weight = weight.detach().float()
    return 1.0 + weight if plus_one else weight  # Gemma's RMSNorm computes x̂ * (1 + weight)


def norm_scale(model: nn.Module) -> torch.Tensor | None:
    """The final norm's elementwise scale g (d_model,), or None when the model has none."""
    return _gain(final_norm(model), family_of(model).norm_plus_one)


def written_directions(model: nn.Module, layer: int) -> torch.Tensor:
    """(d_model, n) directions the neurons of `layer` write into the residual stream: the
    down-projection columns, times the gain of the norm that Gemma 2 / 3 apply to the FFN output
    (its normalisation is a positive scalar per position, which does not change a ranking)."""
    values = down_proj_weight(model, layer).detach().float()
    out_norms = ffn_out_norms(model)
    if out_norms is None:
        return values
    gain = _gain(out_norms[layer], family_of(model).norm_plus_one)
    return values if gain is None else values * gain.to(values.device).unsqueeze(1)


def unembedding(model: nn.Module) -> torch.Tensor:
    """W_U (vocab, d_model): the output-embedding weight (tied or not)."""
    out = model.get_output_embeddings()
    if out is None or getattr(out, "weight", None) is None:
        raise InputError(f"{type(model).__name__} has no output embedding to project onto")
    return out.weight.detach()


def project_neurons(model: nn.Module, neurons: Sequence[tuple[int, int]], *,
                    through_norm: bool = True, top_k: int = 10,
                    chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, token ids) of each neuron's value vector read through the unembedding.

    Returns two (len(neurons), top_k) tensors on CPU, scores float32 in decreasing order, equal
    scores in increasing token id (a stable sort, so the output is deterministic; `torch.topk`
    promises no order among ties). Computed in float32 on the model's device, `chunk_size`
    neurons at a time (W_U · V is vocab × chunk)."""
    family_of(model)  # a clear error for an unknown family
    w_u = unembedding(model)
    vocab = w_u.shape[0]
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    top_k = min(top_k, vocab)
    scale = norm_scale(model) if through_norm else None
    scores_out = torch.empty(len(neurons), top_k, dtype=torch.float32)
    ids_out = torch.empty(len(neurons), top_k, dtype=torch.long)
    weights = {}
    for start in range(0, len(neurons), chunk_size):
        chunk = neurons[start:start + chunk_size]
        columns = []
        for layer, index in chunk:
            if layer not in weights:
                weights[layer] = written_directions(model, layer)
            columns.append(weights[layer][:, index])
        values = torch.stack(columns, dim=1)  # (d_model, chunk) float32
        if scale is not None:
            values = values * scale.float().to(values.device).unsqueeze(1)
        logits = w_u.float().to(values.device) @ values  # (vocab, chunk)
        # A stable ranking: sort by score, ties broken by token id (lower first).
        order = torch.sort(-logits.T.cpu(), dim=1, stable=True)
        scores_out[start:start + len(chunk)] = -order.values[:, :top_k]
        ids_out[start:start + len(chunk)] = order.indices[:, :top_k]
    return scores_out, ids_out


def token_category(token: str, text: str, special: bool = False) -> str:
    """The category of one vocabulary entry (`CATEGORIES`, first match wins).

    `token` is the raw vocabulary piece, `text` its decoded string; the test uses the decoded
    text with word-boundary markers and surrounding whitespace removed, so "▁A", "ĠA" and "A"
    are all option letters, " the" a stop word, "▁May" a month."""
    if special:
        return "special"
    core = (text if text is not None else token).strip().strip(_MARKERS).strip()
    if not core:
        return "whitespace"
    if core in OPTION_LETTERS:
        return "option_letter"
    if core.isdigit():
        return "digit"
    if all(ch in string.punctuation or unicodedata.category(ch)[0] in "PS" for ch in core):
        return "punctuation"
    lower = core.lower()
    if lower in MONTHS:
        return "month"
    if lower in STOP_WORDS:
        return "stop_word"
    return "other"


def table5(model: nn.Module, tokenizer, common: Mapping, *, top_k: int = 10,
           through_norm: bool = True, source: str = "common.json") -> pd.DataFrame:
    """Top-k vocabulary tokens of every common neuron (Table 5), one row per (neuron, rank).

    `common`: the common.json object (docs/formats.md: `neurons` [[layer, index], ...] and the
    parallel `counts`, clusters containing each neuron). Rows follow the file's neuron order
    (by decreasing cluster count), then rank 1..top_k. Columns `TABLE5_COLUMNS`: `clusters` the
    count from common.json, `token` the raw vocabulary piece (`convert_ids_to_tokens`), `text`
    the decoded string, `score` the logit contribution, `category` (`token_category`)."""
    shape = grid_shape(model)
    neurons = _check_common(common, shape, source)
    if not neurons:
        return pd.DataFrame(columns=list(TABLE5_COLUMNS))
    scores, ids = project_neurons(model, [(l, i) for l, i, _ in neurons],
                                  through_norm=through_norm, top_k=top_k)
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    rows = []
    for (layer, index, count), row_scores, row_ids in zip(neurons, scores.tolist(), ids.tolist()):
        tokens = tokenizer.convert_ids_to_tokens(row_ids)
        for rank, (score, token_id, token) in enumerate(zip(row_scores, row_ids, tokens), start=1):
            text = tokenizer.decode([token_id], skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
            rows.append({"layer": layer, "index": index, "clusters": count, "rank": rank,
                         "token_id": token_id, "token": token, "text": text, "score": score,
                         "category": token_category(token, text, token_id in special_ids)})
    return pd.DataFrame(rows, columns=list(TABLE5_COLUMNS))


def summarize(table: pd.DataFrame, n_layers: int, clusters: int | None = None) -> dict:
    """Summary of a Table 5 DataFrame: how many common neurons, their layers, the share in the
    top layer (index n_layers - 1), and the categories of their top tokens — overall (share of
    all top-k rows), of each neuron's rank-1 token, and per layer.

    `clusters`: |C| of the run (common.json `clusters`), recorded for context."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise InputError(f"n_layers must be a positive int, got {n_layers!r}")
    missing = {"layer", "index", "rank", "category"} - set(table.columns)
    if missing:
        raise InputError(f"Table 5 frame lacks columns {sorted(missing)}")
    neurons = table.drop_duplicates(["layer", "index"])[["layer", "index"]]
    n = len(neurons)
    layer_counts = Counter(int(x) for x in neurons["layer"])
    top_layer = n_layers - 1
    in_top = layer_counts.get(top_layer, 0)
    zero = {c: 0 for c in CATEGORIES}
    all_counts = {**zero, **Counter(table["category"])}
    top1 = table[table["rank"] == 1]
    top1_counts = {**zero, **Counter(top1["category"])}
    rows_total = len(table)
    by_layer = {}
    for layer, part in table.groupby("layer", sort=True):
        counts = Counter(part["category"])
        by_layer[int(layer)] = {c: counts.get(c, 0) for c in CATEGORIES}
    return {
        "common_neurons": n,
        "clusters": clusters,
        "top_k": int(table["rank"].max()) if rows_total else 0,
        "n_layers": n_layers,
        "top_layer": top_layer,
        "in_top_layer": in_top,
        "share_top_layer": in_top / n if n else None,
        "neurons_per_layer": {int(k): v for k, v in sorted(layer_counts.items())},
        "category_counts": {c: int(all_counts[c]) for c in CATEGORIES},
        "category_shares": {c: (all_counts[c] / rows_total if rows_total else None)
                            for c in CATEGORIES},
        "top1_category_counts": {c: int(top1_counts[c]) for c in CATEGORIES},
        "category_counts_by_layer": by_layer,
    }


def write_summary(path, summary: Mapping) -> None:
    """Write a `summarize` result as JSON, atomically."""
    write_json(path, dict(summary))
