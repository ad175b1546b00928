"""Neuron-based prediction on held-out questions, the records of Table 7 (docs/method.md §7) — a
RECONSTRUCTION. The table itself is built from these records by `qrnca.outputs.prediction_table`.

The paper predicts the answer of held-out MMLU questions "from the activity of the domain's
neurons" and compares it with the model's own (prompt-based) accuracy; its exact rule is in a
supplement that is not available. This module implements the project's decision:

- **Domain neurons**: per domain (dataset `group`), the union of its queries' QR neurons
  (`domain_neurons`, the same sets as Fig. 2a).
- **Held-out questions**: the subject's MMLU validation split (built by the workflow with
  `qrnca.datasets.build_from_spec(spec, raw, split="val")`: every eligible question), each rendered with the three templates, so every
  held-out question contributes 3 prompts.
- **Neuron-based decision**: for each prompt and each option letter X, the prompt followed by the
  reply X (`qrnca.models.loading.PromptEncoding.reply`: a raw prompt gets `" X"`, so `"...Response: A"`;
  a chat prompt gets X as the assistant turn) is encoded as the model is asked; the score of X is
  the SUM of the domain neurons' activations
  (down-projection inputs, docs/method.md §1) at the last token of that text. The prediction is the
  letter with the largest score (ties to the earlier letter). A group with no domain neurons has
  no neuron-based prediction (recorded as None, counted as wrong).
- **Prompt-based decision** (the model's own answer): argmax over the four letters' full-softmax
  probabilities at the last prompt token (docs/method.md §2, the encoding picks the letter ids), the
  same quantity as `qrnca.evaluation.scoring.score_prompts`, here read from the prompt pass that the
  neuron-based decision needs anyway.

Cost per prompt: one forward over the prompt's T tokens (which also gives the prompt-based
answer and the key/value cache), then one forward of 4 rows × k tokens (k = the continuation's
length, 1 for a letter joined by a space on common tokenisers) attending to the shared prompt
cache, which is never copied (`qrnca.evaluation.interventions` shares it the same way). When a tokeniser
does not tokenise prompt + reply as the prompt's tokens followed by a suffix of equal
length for all four letters, the four full texts are run as one left-padded batch instead
(4 × (T + k) tokens, exact as well); the record says which path was taken.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import InputError, NonFiniteError
from ..io import write_jsonl
from ..models.layouts import grid_shape, record_last_position
from ..models.loading import LETTERS, PromptEncoding
from ..neurons.groups import group_neuron_sets
from .interventions import shared_prefix_layers
from .scoring import left_padded_batch, pad_id

Neuron = tuple[int, int]



def domain_neurons(qrnca_rows: Sequence[Mapping],
                   groups_order: Sequence[str] | None = None) -> dict[str, set[Neuron]]:
    """{group: union of its queries' QR neurons} from the rows of a neurons file
    (docs/formats.md "Neurons"); groups in `groups_order` or first-seen order."""
    return group_neuron_sets(qrnca_rows, groups_order)


def _layer_indices(neurons: set[Neuron], shape: tuple[int, int], group: str,
                   device) -> dict[int, torch.Tensor]:
    n_layers, width = shape
    by_layer: dict[int, list[int]] = {}
    for layer, index in sorted(neurons):
        if not (0 <= layer < n_layers and 0 <= index < width):
            raise InputError(f"domain {group!r}: neuron ({layer}, {index}) is outside the model's "
                             f"neuron grid {n_layers} x {width}")
        by_layer.setdefault(layer, []).append(index)
    return {layer: torch.tensor(idx, dtype=torch.long, device=device)
            for layer, idx in by_layer.items()}


def _neuron_sums(recorded: Mapping[int, torch.Tensor],
                 indices: Mapping[int, torch.Tensor], rows: int) -> list[float]:
    total = torch.zeros(rows, dtype=torch.float64)
    for layer, idx in indices.items():
        total += recorded[layer][:, idx].double().sum(dim=1).cpu()
    return total.tolist()


def _argmax(values: Sequence[float], letters: Sequence[str]) -> str:
    """The letter with the largest value; ties go to the earlier letter."""
    return letters[max(range(len(letters)), key=lambda j: (values[j], -j))]


@torch.no_grad()
def _continuation_activations(model: nn.Module, prompt_ids: torch.Tensor, cache,
                              full_ids: Sequence[torch.Tensor],
                              padding: int) -> tuple[dict[int, torch.Tensor], str]:
    """Down-projection inputs at the last token of each full sequence: {layer: (rows, n)}."""
    length = prompt_ids.shape[1]
    suffixes = [ids[length:] for ids in full_ids]
    shared = (cache is not None
              and all(len(ids) > length and torch.equal(ids[:length], prompt_ids[0])
                      for ids in full_ids)
              and len({len(s) for s in suffixes}) == 1)
    base = model.base_model
    device = prompt_ids.device
    with record_last_position(model) as recorded:
        if shared:
            from transformers.cache_utils import Cache

            layers = shared_prefix_layers(cache, length)
            base(input_ids=torch.stack(suffixes).to(device), past_key_values=Cache(layers=layers),
                 use_cache=True)
        else:
            ids, mask, positions = left_padded_batch(list(full_ids), padding)
            base(input_ids=ids.to(device), attention_mask=mask.to(device),
                 position_ids=positions.to(device))
    return dict(recorded), "shared_prefix" if shared else "full"


@torch.no_grad()
def neuron_based_predictions(model: nn.Module, tokenizer, queries: Sequence[Mapping],
                             neurons_by_group: Mapping[str, set[Neuron] | Sequence[Neuron]], *,
                             encoding: PromptEncoding = PromptEncoding(),
                             progress: bool = False) -> list[dict]:
    """One record per held-out prompt, in dataset order (query, then template):

    `id`, `group`, `prompt` (template index), `gold`, `n_neurons` (the domain's neuron count),
    `neuron_scores` {A..D} (summed domain-neuron activation at the last token of
    prompt + reply), `neuron_predicted` (argmax, None without domain neurons),
    `letter_probs` {A..D} (full-softmax probability at the last prompt token), `prompt_predicted`
    (argmax), `continuation` ("shared_prefix" or "full", see the module docstring).

    Every query's group must be a key of `neurons_by_group` (`domain_neurons`)."""
    from tqdm.auto import tqdm

    letters = list(LETTERS)
    letter_ids = encoding.letters(tokenizer, letters)
    columns = torch.tensor([letter_ids[x] for x in letters], dtype=torch.long)
    shape = grid_shape(model)
    device = next(model.parameters()).device
    padding = pad_id(tokenizer)
    indices: dict[str, dict[int, torch.Tensor]] = {}
    records = []
    for q_pos, query in enumerate(tqdm(queries, desc="neuron-based prediction",
                                       disable=not progress), start=1):
        try:
            qid, group, prompts, answers = (query["id"], query["group"], query["prompts"],
                                            query["answers"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"held-out query {q_pos}: missing field {exc}") from None
        if group not in neurons_by_group:
            raise InputError(f"held-out query {qid!r}: group {group!r} has no domain neurons entry "
                             f"(known groups: {sorted(neurons_by_group)})")
        if len(prompts) != len(answers):
            raise InputError(f"held-out query {qid!r}: {len(prompts)} prompts but "
                             f"{len(answers)} answers")
        if group not in indices:
            indices[group] = _layer_indices(set(map(tuple, neurons_by_group[group])), shape,
                                            group, device)
        n_neurons = len(set(map(tuple, neurons_by_group[group])))
        for k, (prompt, gold) in enumerate(zip(prompts, answers)):
            if gold not in letter_ids:
                raise InputError(f"held-out query {qid!r}, prompt {k}: gold letter {gold!r} is "
                                 f"not one of {letters}")
            prompt_ids = encoding.ids(tokenizer, prompt).to(device)
            out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1)
            probs = torch.softmax(out.logits[0, -1].float(), dim=-1)[columns.to(device)]
            letter_probs = [float(p) for p in probs.cpu()]
            full_ids = [encoding.ids(tokenizer, prompt, encoding.reply(x))[0].to(device)
                        for x in letters]
            recorded, path = _continuation_activations(
                model, prompt_ids, getattr(out, "past_key_values", None), full_ids, padding)
            scores = _neuron_sums(recorded, indices[group], len(letters))
            if not all(math.isfinite(v) for v in [*letter_probs, *scores]):
                raise NonFiniteError(f"held-out query {qid!r}, prompt {k}: non-finite letter "
                                     f"probabilities {letter_probs} or neuron scores {scores}")
            records.append({
                "id": qid, "group": group, "prompt": k, "gold": gold, "n_neurons": n_neurons,
                "neuron_scores": dict(zip(letters, scores)),
                "neuron_predicted": _argmax(scores, letters) if n_neurons else None,
                "letter_probs": dict(zip(letters, letter_probs)),
                "prompt_predicted": _argmax(letter_probs, letters),
                "continuation": path,
            })
    return records


def write_predictions(path: str | os.PathLike, records: Sequence[Mapping]) -> int:
    """Write per-prompt prediction records as JSON lines, atomically."""
    return write_jsonl(path, records)
