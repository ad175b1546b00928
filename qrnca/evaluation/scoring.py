"""Prompt-based accuracy: the model's probability of each option letter at the last prompt token.

For every prompt the score is the full-vocabulary softmax probability of each option letter's
token at the last position (docs/method.md §2: not renormalised over A-D), and the prediction is the
letter with the largest of the four. Prompts are encoded as the model is asked
(`qrnca.models.loading.PromptEncoding`: raw or chat template, bare or leading-space letter tokens) and
scored in batches with LEFT padding, an attention mask and explicit position ids, so the last
position of every row is its real last token and each row sees exactly the positions it would see
alone (a batched score equals the unbatched one up to float rounding). Prompts are batched in order
of length to keep padding small; results come back in dataset order.

Because which token is scored matters a great deal on real models (a raw prompt may put almost
no probability on the bare letters), `encoding_study` measures every setting: the accuracy and
the letter mass (the probability on A-D together) per group for raw / chat prompts and bare /
leading-space letters.

Outputs (docs/formats.md "Accuracy"): `scores.jsonl` (one line per prompt, the encoding in use)
and `accuracy.csv` (per setting, one row per group in first-seen order, then `ALL`).
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch

from ..errors import InputError, LetterTokenError, NonFiniteError
from ..io import write_jsonl
from ..models.loading import (ANSWER_TOKEN_MODES, LETTERS, PROMPT_FORMATS, PromptEncoding,
                              letter_token_ids)

ACCURACY_COLUMNS = ("prompt_format", "answer_token", "used", "group", "prompts", "correct",
                    "accuracy", "letter_mass", "note")


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


def pad_id(tokenizer) -> int:
    """The id that pads a batch (`left_padded_batch`): pad, else end-of-sequence, else unknown,
    else 0. Padded positions are masked, so the choice never changes a result."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@torch.inference_mode()
def token_probabilities(model, tokenizer, prompts: Sequence[str], token_ids: Sequence[int], *,
                        encoding: PromptEncoding = PromptEncoding(), batch_size: int = 16,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """(len(prompts), len(token_ids)) full-softmax probabilities of the tokens at the last
    position of each prompt (in `encoding`'s prompt format), float32, on CPU. Only the last
    position's logits are computed (the vocabulary projection dominates for large vocabularies)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    encoded = [encoding.ids(tokenizer, p)[0] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    columns = torch.tensor(list(token_ids), dtype=torch.long)
    out = torch.empty((len(prompts), len(columns)), dtype=torch.float32)
    pad = pad_id(tokenizer)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask, positions = left_padded_batch([encoded[i] for i in rows], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), logits_to_keep=1).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)[:, columns.to(logits.device)]
        out[torch.tensor(rows)] = probs.cpu()
    return out


def _prompt_keys(queries: Sequence[Mapping]) -> tuple[list[tuple], list[str]]:
    """((id, group, prompt index, gold) per prompt, prompt texts), in dataset order, validated."""
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
            if gold not in LETTERS:
                raise InputError(f"query {qid!r}, prompt {k}: gold letter {gold!r} is not one of {LETTERS}")
            keys.append((qid, group, k, gold))
            prompts.append(prompt)
    return keys, prompts


def _records(keys: Sequence[tuple], probs: torch.Tensor, letters: Sequence[str]) -> list[dict]:
    records = []
    for (qid, group, k, gold), row in zip(keys, probs.tolist()):
        if not all(math.isfinite(p) for p in row):
            raise NonFiniteError(f"query {qid!r}, prompt {k}: the model gives non-finite letter "
                                 f"probabilities {dict(zip(letters, row))}")
        best = max(range(len(letters)), key=lambda j: (row[j], -j))
        records.append({"id": qid, "group": group, "prompt": k, "gold": gold,
                        "letter_probs": dict(zip(letters, row)), "predicted": letters[best]})
    return records


def score_prompts(model, tokenizer, queries: Sequence[Mapping], *,
                  encoding: PromptEncoding = PromptEncoding(), batch_size: int = 16,
                  device: str | torch.device = "cpu") -> list[dict]:
    """One record per prompt, in dataset order: `id`, `group`, `prompt` (index in the query),
    `gold` letter, `letter_probs` {A..D} and `predicted` (argmax over A-D; ties go to the
    earlier letter)."""
    letter_ids = encoding.letters(tokenizer)
    keys, prompts = _prompt_keys(queries)
    probs = token_probabilities(model, tokenizer, prompts, list(letter_ids.values()),
                                encoding=encoding, batch_size=batch_size, device=device)
    return _records(keys, probs, list(letter_ids))


def accuracy_table(scores: Iterable[Mapping]) -> pd.DataFrame:
    """Columns group, prompts, correct, accuracy, letter_mass (mean over the prompts of the
    probability the model puts on the four letters together): one row per group (first-seen
    order), then ALL."""
    frame = pd.DataFrame(
        [(s["group"], s["predicted"] == s["gold"], sum(s["letter_probs"].values())) for s in scores],
        columns=["group", "correct", "mass"],
    )
    per_group = frame.groupby("group", sort=False).agg(
        prompts=("correct", "size"), correct=("correct", "sum"), letter_mass=("mass", "mean")
    ).reset_index()
    total = pd.DataFrame([{"group": "ALL", "prompts": len(frame), "correct": int(frame["correct"].sum()),
                           "letter_mass": frame["mass"].mean() if len(frame) else float("nan")}])
    table = pd.concat([per_group, total], ignore_index=True)
    table["prompts"] = table["prompts"].astype(int)
    table["correct"] = table["correct"].astype(int)
    table["accuracy"] = (table["correct"] / table["prompts"].where(table["prompts"] > 0)).fillna(0.0)
    return table[["group", "prompts", "correct", "accuracy", "letter_mass"]]


def encoding_study(model, tokenizer, queries: Sequence[Mapping], *, used: PromptEncoding,
                   batch_size: int = 16, device: str | torch.device = "cpu"
                   ) -> tuple[list[dict], pd.DataFrame]:
    """What the model is asked, measured: for every prompt format (raw, chat) and answer token
    (bare, leading space), accuracy and letter mass per group (`accuracy_table`), one forward
    pass per format. Returns the per-prompt records of the `used` encoding and the table
    (`ACCURACY_COLUMNS`; a setting this model cannot use — no chat template, a letter that is not
    one token — is one row with its reason in `note`)."""
    keys, prompts = _prompt_keys(queries)
    parts, used_records = [], None
    for prompt_format in PROMPT_FORMATS:
        letter_ids, notes = {}, {}
        for answer_token in ANSWER_TOKEN_MODES:
            try:
                letter_ids[answer_token] = letter_token_ids(tokenizer, answer_token)
            except LetterTokenError as exc:
                notes[answer_token] = str(exc)
        encoding = PromptEncoding(prompt_format=prompt_format)
        try:
            encoding.text(tokenizer, "")
        except InputError as exc:
            notes = {a: str(exc) for a in ANSWER_TOKEN_MODES}
            letter_ids = {}
        columns = sorted({i for ids in letter_ids.values() for i in ids.values()})
        probs = (token_probabilities(model, tokenizer, prompts, columns, encoding=encoding,
                                     batch_size=batch_size, device=device) if columns else None)
        for answer_token in ANSWER_TOKEN_MODES:
            is_used = used == PromptEncoding(answer_token, prompt_format)
            if answer_token in notes:
                if is_used:
                    raise InputError(notes[answer_token])
                table = pd.DataFrame([{"group": "ALL", "prompts": 0, "correct": 0,
                                       "accuracy": float("nan"), "letter_mass": float("nan"),
                                       "note": notes[answer_token]}])
            else:
                ids = letter_ids[answer_token]
                chosen = probs[:, [columns.index(i) for i in ids.values()]]
                records = _records(keys, chosen, list(ids))
                if is_used:
                    used_records = records
                table = accuracy_table(records).assign(note="")
            parts.append(table.assign(prompt_format=prompt_format, answer_token=answer_token,
                                      used=is_used))
    return used_records, pd.concat(parts, ignore_index=True)[list(ACCURACY_COLUMNS)]


def write_scores(path: str | os.PathLike, scores: Iterable[Mapping]) -> int:
    """Write per-prompt scores as `scores.jsonl`, atomically; return the number of lines."""
    return write_jsonl(path, scores)
