"""Prompt-based accuracy: the model's probability of each option letter at the last prompt token.

For every prompt the score is the full-vocabulary softmax probability of each option letter's
token at the last position (method.md §2: not renormalised over A-D), and the prediction is the
letter with the largest of the four. Prompts are tokenised with BOS (`qrnca.models.encode_prompt`)
and scored in batches with LEFT padding, an attention mask and explicit position ids, so the
last position of every row is its real last token and each row sees exactly the positions it
would see alone (a batched score equals the unbatched one up to float rounding). Prompts are
batched in order of length to keep padding small; results come back in dataset order.

Outputs (docs/formats.md "Accuracy"): `scores.jsonl` (one line per prompt) and `accuracy.csv`
(one row per group in first-seen order, then `ALL`).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch

from .errors import InputError
from .io import atomic_open, write_jsonl
from .models import LETTERS, encode_prompt, letter_token_ids

ACCURACY_COLUMNS = ("group", "prompts", "correct", "accuracy")


def left_padded_batch(sequences: Sequence[torch.Tensor], pad_id: int):
    """(input_ids, attention_mask, position_ids) of 1-D id tensors, padded on the left.

    Position ids count real tokens only, so a padded row has the same positions as alone (the
    Hugging Face forward otherwise numbers positions from the start of the padded row).
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


@torch.inference_mode()
def letter_probabilities(model, tokenizer, prompts: Sequence[str], letter_ids: Mapping[str, int], *,
                         batch_size: int = 16, device: str | torch.device = "cpu") -> torch.Tensor:
    """(len(prompts), len(letter_ids)) full-softmax probabilities of the letters, float32, on CPU."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    encoded = [encode_prompt(tokenizer, p)[0] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    columns = torch.tensor(list(letter_ids.values()), dtype=torch.long)
    out = torch.empty((len(prompts), len(letter_ids)), dtype=torch.float32)
    pad = _pad_id(tokenizer)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask, positions = left_padded_batch([encoded[i] for i in rows], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device)).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)[:, columns.to(logits.device)]
        out[torch.tensor(rows)] = probs.cpu()
    return out


def score_prompts(model, tokenizer, queries: Sequence[Mapping], *, answer_token: str = "bare",
                  batch_size: int = 16, device: str | torch.device = "cpu") -> list[dict]:
    """One record per prompt, in dataset order: `id`, `group`, `prompt` (index in the query),
    `gold` letter, `letter_probs` {A..D} and `predicted` (argmax over A-D; ties go to the
    earlier letter)."""
    letter_ids = letter_token_ids(tokenizer, answer_token)
    keys, prompts = [], []
    for q_index, query in enumerate(queries):
        try:
            query_prompts, answers = query["prompts"], query["answers"]
            qid, group = query["id"], query["group"]
        except KeyError as exc:
            raise InputError(f"query {q_index + 1}: missing field {exc.args[0]!r}") from None
        if len(query_prompts) != len(answers):
            raise InputError(f"query {qid!r}: {len(query_prompts)} prompts but {len(answers)} answers")
        for k, (prompt, gold) in enumerate(zip(query_prompts, answers)):
            if gold not in letter_ids:
                raise InputError(f"query {qid!r}, prompt {k}: gold letter {gold!r} is not one of {LETTERS}")
            keys.append((qid, group, k, gold))
            prompts.append(prompt)
    probs = letter_probabilities(model, tokenizer, prompts, letter_ids, batch_size=batch_size, device=device)
    letters = list(letter_ids)
    records = []
    for (qid, group, k, gold), row in zip(keys, probs.tolist()):
        best = max(range(len(letters)), key=lambda j: (row[j], -j))
        records.append({"id": qid, "group": group, "prompt": k, "gold": gold,
                        "letter_probs": dict(zip(letters, row)), "predicted": letters[best]})
    return records


def accuracy_table(scores: Iterable[Mapping]) -> pd.DataFrame:
    """Columns group, prompts, correct, accuracy: one row per group (first-seen order), then ALL."""
    frame = pd.DataFrame(
        [(s["group"], s["predicted"] == s["gold"]) for s in scores], columns=["group", "correct"]
    )
    per_group = frame.groupby("group", sort=False)["correct"].agg(prompts="size", correct="sum").reset_index()
    total = pd.DataFrame([{"group": "ALL", "prompts": len(frame), "correct": int(frame["correct"].sum())}])
    table = pd.concat([per_group, total], ignore_index=True)
    table["prompts"] = table["prompts"].astype(int)
    table["correct"] = table["correct"].astype(int)
    table["accuracy"] = (table["correct"] / table["prompts"].where(table["prompts"] > 0)).fillna(0.0)
    return table[list(ACCURACY_COLUMNS)]


def write_accuracy(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write an accuracy table as `accuracy.csv`, atomically."""
    with atomic_open(path) as fh:
        table.to_csv(fh, index=False, lineterminator="\n")


def write_scores(path: str | os.PathLike, scores: Iterable[Mapping]) -> int:
    """Write per-prompt scores as `scores.jsonl`, atomically; return the number of lines."""
    return write_jsonl(path, scores)
