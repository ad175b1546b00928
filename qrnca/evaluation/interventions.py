"""Exact last-position interventions (boost / suppress) evaluated cheaply over a shared prefix.

Every intervention of this project (docs/method.md §6-§7) multiplies some neurons' activations at the
LAST prompt token only: boost = x 2, suppress = x 0. In a causal decoder nothing at earlier
positions depends on the last token, so the keys and values of the prefix (all tokens but the
last) are identical for every intervention. `SharedPrefix` therefore runs the prefix once and then
evaluates any number of intervention *rows* as a batch of single-token passes that attend to it.

How the prefix is shared (exact, and never copied per row): the prefix keys / values of each layer
are kept at batch size 1 inside a cache layer whose `update` returns
`cat(prefix.expand(rows), new_key)` and does not store anything. So the cache is never mutated, no
`crop` is needed between chunks, and the only per-row key/value memory is the transient
concatenation of the one layer being computed: rows x kv_heads x T x head_dim (x 2 for values).
Positions are right because the cache reports the prefix length, so the row token sits at position
T-1 (RoPE, learned positions); grouped-query caches hold the model's own KV heads.

Cost per prompt: one forward over T-1 tokens (without the unembedding), then
ceil(rows / chunk_size) forwards of `chunk_size` rows x 1 token. Memory beyond the model:
the prefix cache (one copy) plus one layer's concatenated keys / values for a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from ..errors import InputError
from ..models.layouts import edit_last_position, grid_shape, multiply_edit

Neuron = tuple[int, int]


@dataclass(frozen=True)
class Edit:
    """One intervention row: multiply `neurons` ((layer, index) pairs) by `factor` at the last
    position. No neurons (or factor 1) is the clean row. Build each edit once and reuse it: its
    identity and its neurons as arrays are computed on first use and kept."""

    neurons: tuple[Neuron, ...] = ()
    factor: float = 1.0

    @classmethod
    def of(cls, neurons: Iterable[Sequence[int]], factor: float) -> "Edit":
        return cls(tuple((int(layer), int(index)) for layer, index in neurons), float(factor))

    def key(self) -> tuple:
        """Identity of the computation: two edits with equal keys give identical rows."""
        return self._key

    @cached_property
    def _key(self) -> tuple:
        if self.factor == 1.0 or not self.neurons:
            return ()
        return (frozenset(self.neurons), self.factor)

    @cached_property
    def cells(self) -> np.ndarray:
        """The neurons as an (n, 2) int64 array of (layer, index), in order."""
        return np.array(self.neurons, dtype=np.int64).reshape(-1, 2)


CLEAN = Edit()


@dataclass
class RowProbabilities:
    """Full-vocabulary softmax probabilities of the option letters for each row.

    `letter_probs[r, j]` is p(letters[j]) at the last position for row r (not renormalised over the
    letters); `gold_probs` the column of the gold letter when a gold letter was given."""

    letters: tuple[str, ...]
    letter_probs: np.ndarray  # (rows, n_letters) float64
    gold: str | None = None
    distinct_rows: int = 0  # rows actually computed (after merging identical edits)

    @property
    def gold_probs(self) -> np.ndarray:
        if self.gold is None:
            raise InputError("no gold letter was given for these rows")
        return self.letter_probs[:, self.letters.index(self.gold)]

    @property
    def predicted(self) -> list[str]:
        """argmax over the letters (first letter wins ties)."""
        return [self.letters[j] for j in self.letter_probs.argmax(axis=1)]


class SharedPrefixLayer(DynamicLayer):
    """One layer's prefix keys / values (batch 1), served to a batch of single-token rows.

    `update` returns the prefix expanded to the rows' batch with the rows' own key / value appended,
    and stores nothing, so the same cache serves every chunk unchanged. `prefix_length` is the
    number of prefix tokens (the row token sits at that position); a sliding-window layer holds
    only the last window − 1 of them (all the row can see), and reports to the mask builder that
    its keys start at `prefix_length − len(keys)`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, prefix_length: int,
                 sliding: bool = False):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values
        self.prefix_length = prefix_length
        self.is_sliding = sliding

    def update(self, key_states, value_states, *args, **kwargs):
        rows = key_states.shape[0]
        keys = torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2)
        return keys, values

    def get_seq_length(self) -> int:
        return self.prefix_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        stored = self.keys.shape[-2]
        return stored + query_length, self.prefix_length - stored

    def crop(self, tokens_to_remove: int) -> None:  # nothing is ever appended
        return None


def multipliers(edits: Sequence[Edit], shape: tuple[int, int], device) -> dict[int, torch.Tensor]:
    """Per-layer (rows, width) multiplier matrices; layers no row touches are absent (left alone).

    Built with one indexed write: every (row, layer, index) cell of the non-clean rows gets its
    row's factor (a neuron listed twice gets the same factor twice), all other cells are 1."""
    n_layers, width = shape
    picked = [(row, edit) for row, edit in enumerate(edits) if edit.key()]
    if not picked:
        return {}
    cells = np.concatenate([edit.cells for _, edit in picked])
    rows = np.concatenate([np.full(len(edit.cells), row, dtype=np.int64) for row, edit in picked])
    factors = np.concatenate([np.full(len(edit.cells), edit.factor, dtype=np.float32)
                              for _, edit in picked])
    layers, indices = cells[:, 0], cells[:, 1]
    outside = (layers < 0) | (layers >= n_layers) | (indices < 0) | (indices >= width)
    if outside.any():
        layer, index = cells[int(np.argmax(outside))]
        raise InputError(f"neuron ({layer}, {index}) is outside the model's neuron grid "
                         f"{n_layers} x {width}")
    touched = np.unique(layers)
    matrices = torch.ones(len(touched), len(edits), width, device=device)
    where = [torch.from_numpy(a).to(device) for a in (np.searchsorted(touched, layers), rows, indices)]
    matrices.index_put_(tuple(where), torch.from_numpy(factors).to(device))
    return {int(layer): matrices[i] for i, layer in enumerate(touched)}


def shared_prefix_layers(cache: Cache, prefix_length: int) -> list[SharedPrefixLayer]:
    """The layers of a prefix's cache (batch 1, from a forward with `use_cache=True`) as shared,
    read-only layers; sliding-window layers keep only the window − 1 tokens a row can see."""
    layers = []
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        sliding = bool(getattr(layer, "is_sliding", False))
        window = getattr(layer, "sliding_window", None)
        if sliding and window:
            start = max(keys.shape[-2] - (window - 1), 0)
            keys, values = keys[:, :, start:], values[:, :, start:]
        layers.append(SharedPrefixLayer(keys, values, prefix_length, sliding))
    return layers


class SharedPrefix:
    """One prompt's prefix, computed once, against which intervention rows are evaluated.

    `input_ids`: (1, T) token ids of the whole prompt (`qrnca.models.loading.PromptEncoding.ids`). The last token is the one whose next-token distribution gives
    the answer letter; it is the only position ever edited.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor):
        if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
            raise InputError(f"expected input ids of shape (1, T>=1), got {tuple(input_ids.shape)}")
        self.model = model
        self.device = next(model.parameters()).device
        self.input_ids = input_ids.to(self.device)
        self.length = self.input_ids.shape[1]
        self.shape = grid_shape(model)
        self._layers: list[SharedPrefixLayer] | None = None
        if self.length > 1:
            with torch.no_grad():
                out = model.base_model(self.input_ids[:, :-1], use_cache=True)
            self._layers = shared_prefix_layers(out.past_key_values, self.length - 1)

    def _cache(self) -> Cache | None:
        return None if self._layers is None else Cache(layers=list(self._layers))

    @torch.no_grad()
    def letter_probabilities(self, edits: Sequence[Edit], letter_ids: Mapping[str, int],
                             gold: str | None = None, chunk_size: int = 64) -> RowProbabilities:
        """Run every edit as one row; return the letters' full-softmax probabilities per row.

        Rows are computed `chunk_size` at a time (a bound on memory). Identical edits (same
        neuron set and factor, e.g. two methods that chose the same neurons) are computed once.
        """
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        letters = tuple(letter_ids)
        if gold is not None and gold not in letters:
            raise InputError(f"gold letter {gold!r} is not one of {letters}")
        ids = torch.tensor([letter_ids[x] for x in letters], device=self.device)
        unique: dict[tuple, int] = {}
        distinct: list[Edit] = []
        row_of = []
        for edit in edits:
            k = edit.key()
            if k not in unique:
                unique[k] = len(distinct)
                distinct.append(edit)
            row_of.append(unique[k])
        probs = torch.empty(len(distinct), len(letters), dtype=torch.float64)
        last = self.input_ids[:, -1:]
        for start in range(0, len(distinct), chunk_size):
            chunk = distinct[start:start + chunk_size]
            factors = multipliers(chunk, self.shape, self.device)
            tokens = last.expand(len(chunk), 1) if self._layers is not None else \
                self.input_ids.expand(len(chunk), -1)
            with edit_last_position(self.model, multiply_edit(factors), layers=factors):
                logits = self.model(input_ids=tokens, past_key_values=self._cache(),
                                    use_cache=self._layers is not None).logits[:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)[:, ids]
            probs[start:start + len(chunk)] = logp.exp().double().cpu()
        return RowProbabilities(letters, probs[row_of].numpy(), gold, len(distinct))
