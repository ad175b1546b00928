"""A tiny Llama trained on CPU to answer the demo world's questions (see `qrnca.demo.world`).

QRNCA looks for neurons that carry a query's knowledge; a random-weight model has none. So the
demo trains a small `LlamaForCausalLM` (4 layers, hidden 64, FFN 256 by default) and a word-level
tokenizer (`qrnca.models.tiny.train_word_tokenizer`, in which A-D are single tokens) until it
answers the demo MCQ prompts, then saves both with `save_pretrained`, so every later stage loads
it through `qrnca.models.loading.load_model` like a hub model.

What it learns from (the demo's choices, not the paper's; measured on the default world):

- Letter loss (always): each MCQ prompt of the demo datasets, cross-entropy of its gold letter
  at the last prompt token over the full vocabulary -- the quantity every later stage measures.
- Prompt LM loss (`prompt_lm`, default on, weight `lm_weight`): ordinary next-token loss on the
  prompt text itself. It costs ~10 % per step and reaches 100 % accuracy in fewer steps.
- So by default the model *memorises* the answer of each prompt as the dataset renders it (its
  entity or subject with its instruction template -> letter). That is knowledge tied to the
  query's own words, which is what QRNCA looks for, but it is not the general skill "recall the
  fact, find it among the options": with re-ordered options the model is at chance, and so it
  is on the held-out `val` questions.
- Option shuffling (`augment`, default 0): re-orders a training prompt's options (moving the
  gold letter), which forces the general skill. In our trials that skill appeared only after a
  plateau of ~1000 steps (several CPU minutes), too slow for the demo's budget, so it is off.
- Fact sentences (`extra_texts`, e.g. the world's `statements.txt`; default none): next-token
  loss on them. With the demo's budget they did not make held-out questions answerable, so the
  demo passes them only as `vocabulary_texts` (no unknown words in held-out prompts).

Training is seeded (`torch.manual_seed`, `random.Random(seed)`), uses deterministic algorithms
and one thread by default (two OpenMP threads on a busy 2-core machine were ten times slower),
and stops once accuracy on the training prompts has been 100 % at `patience` consecutive
evaluations. The output directory is written
atomically: everything goes into a temporary sibling directory that is renamed at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from safetensors import SafetensorError

from ..datasets.render import parse_options
from ..errors import InputError, OutputError
from ..evaluation.scoring import token_probabilities
from ..io import output_error, share_permissions, write_json
from ..models.loading import LETTERS, letter_token_ids
from ..models.tiny import train_word_tokenizer

METRICS_FILE = "training.json"

log = logging.getLogger(__name__)


def pairs_from_queries(queries: Iterable[Mapping]) -> list[tuple[str, str]]:
    """(prompt, gold letter) for every prompt of every query, in dataset order."""
    return [(p, a) for q in queries for p, a in zip(q["prompts"], q["answers"])]


def shuffle_options(prompt: str, answer: str, rng: random.Random) -> tuple[str, str]:
    """The prompt with its four options in a random order, and the gold letter that follows them.

    A prompt without the standard option block (`qrnca.datasets.render`) is returned unchanged.
    """
    options = parse_options(prompt)
    if options is None:
        return prompt, answer
    order = list(range(len(options)))
    rng.shuffle(order)
    shuffled = [options[i] for i in order]

    def block(opts):
        return "\n" + "".join(f" {letter}. {text}\n" for letter, text in zip(LETTERS, opts)) + "\n"

    new_prompt = prompt.replace(block(options), block(shuffled), 1)
    return new_prompt, LETTERS[order.index(LETTERS.index(answer))]


@contextlib.contextmanager
def _torch_settings(threads: int):
    """Fixed thread count and deterministic algorithms for the duration of training."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _build_model(vocab_size: int, *, layers, hidden, intermediate, heads, max_positions, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    # The word-level tokenizer adds BOS itself, as Llama's does (`qrnca.models.loading.PromptEncoding`).
    texts = list(texts)
    return tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def _next_token_loss(logits: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (unpadded) tokens of right-padded rows."""
    targets = torch.full(logits.shape[:2], -100, dtype=torch.long)
    for j, r in enumerate(rows):
        targets[j, :len(r) - 1] = torch.tensor(r[1:])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100)


def _batch_loss(model, mcq: list[tuple[list[int], int]], lm: list[list[int]], pad_id: int,
                prompt_lm: bool = False):
    """(letter loss, LM loss) of one right-padded batch of MCQ rows and statement rows.

    Right padding needs no attention mask in a causal model (padding only follows real tokens).
    The unembedding is applied only where a loss is taken: the last prompt token of MCQ rows
    (full-vocabulary cross-entropy of the gold letter) and every position of statement rows.
    """
    rows = [ids for ids, _ in mcq] + list(lm)
    hidden = model.model(input_ids=_right_padded(rows, pad_id)).last_hidden_state
    last = torch.tensor([len(ids) - 1 for ids, _ in mcq])
    letter_logits = model.lm_head(hidden[torch.arange(len(mcq)), last])
    letter_loss = torch.nn.functional.cross_entropy(letter_logits, torch.tensor([t for _, t in mcq]))
    lm_rows = ([ids for ids, _ in mcq] if prompt_lm else []) + list(lm)
    if not lm_rows:
        return letter_loss, torch.zeros(())
    first = 0 if prompt_lm else len(mcq)
    return letter_loss, _next_token_loss(model.lm_head(hidden[first:]), lm_rows)


def train_demo_model(
    prompts_and_answers: Sequence[tuple[str, str]],
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    layers: int = 4,
    hidden: int = 64,
    intermediate: int = 256,
    heads: int = 4,
    steps: int = 400,
    batch_size: int = 32,
    lm_batch_size: int = 16,
    lr: float = 3e-3,
    warmup: int = 30,
    augment: float = 0.0,
    lm_weight: float = 0.5,
    prompt_lm: bool = True,
    eval_every: int = 50,
    eval_below: float = 0.3,
    patience: int = 2,
    threads: int = 1,
    extra_texts: Iterable[str] = (),
    vocabulary_texts: Iterable[str] = (),
    max_positions: int = 512,
) -> dict:
    """Train the demo model on (prompt, gold letter) pairs and save it to `out_dir`.

    `extra_texts` are sentences trained with next-token loss (`lm_batch_size` per step);
    `vocabulary_texts` only add words to the tokenizer (e.g. the world's statements, so that
    held-out prompts have no unknown words). At most `steps` optimizer steps. Every `eval_every`
    steps, once the mean letter loss since the last check is below `eval_below`, accuracy on the
    given prompts is measured; training stops after `patience` consecutive checks at 100 %.
    Returns the metrics written to `out_dir/training.json`, plus `seconds` (the wall time, which
    is not written there: a rerun writes the same bytes).
    """
    pairs = [(str(p), str(a)) for p, a in prompts_and_answers]
    if not pairs:
        raise InputError("train_demo_model: no training prompts")
    for k, (_, answer) in enumerate(pairs):
        if answer not in LETTERS:
            raise InputError(f"train_demo_model: prompt {k}: gold letter {answer!r} is not one of {LETTERS}")
    texts = [t for t in extra_texts if t.strip()]
    out_dir = Path(out_dir)
    started = time.perf_counter()
    rng = random.Random(seed)

    with _torch_settings(threads):
        torch.manual_seed(seed)
        tokenizer = train_word_tokenizer([p for p, _ in pairs] + texts + list(vocabulary_texts))
        letter_ids = letter_token_ids(tokenizer, "bare")
        model = _build_model(len(tokenizer), layers=layers, hidden=hidden, intermediate=intermediate,
                             heads=heads, max_positions=max_positions, tokenizer=tokenizer)
        original = [(ids, letter_ids[a]) for ids, (_, a) in zip(_encode(tokenizer, [p for p, _ in pairs]), pairs)]
        lm_rows = [r for r in _encode(tokenizer, texts) if len(r) > 1]
        longest = max(len(ids) for ids, _ in original)
        if longest > max_positions:
            raise InputError(f"train_demo_model: a prompt has {longest} tokens, more than max_positions={max_positions}")

        decay, no_decay = [], []
        for param in model.parameters():
            (no_decay if param.ndim < 2 else decay).append(param)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=lr, betas=(0.9, 0.98))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, steps - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        pad_id = tokenizer.pad_token_id

        def evaluate() -> float:
            model.eval()
            probs = token_probabilities(model, tokenizer, [p for p, _ in pairs], list(letter_ids.values()),
                                        batch_size=64)
            model.train()
            predicted = probs.argmax(dim=-1).tolist()
            return sum(LETTERS[j] == a for j, (_, a) in zip(predicted, pairs)) / len(pairs)

        def draw(order: list[int], n: int, size: int) -> list[int]:
            """n indices from a shuffled pass over range(size), reshuffled when used up (epochs)."""
            out = []
            for _ in range(n):
                if not order:
                    order.extend(range(size))
                    rng.shuffle(order)
                out.append(order.pop())
            return out

        mcq_order: list[int] = []
        lm_order: list[int] = []
        history, window = [], []
        streak = step = 0
        accuracy = None
        last = {"loss": float("nan"), "letter_loss": float("nan"), "lm_loss": float("nan")}
        model.train()
        while step < steps:
            mcq = []
            for i in draw(mcq_order, batch_size, len(pairs)):
                if augment and rng.random() < augment:
                    prompt, answer = shuffle_options(*pairs[i], rng)
                    mcq.append((_encode(tokenizer, [prompt])[0], letter_ids[answer]))
                else:
                    mcq.append(original[i])
            lm = [lm_rows[j] for j in draw(lm_order, lm_batch_size, len(lm_rows))] if lm_rows else []
            letter_loss, lm_loss = _batch_loss(model, mcq, lm, pad_id, prompt_lm)
            loss = letter_loss + lm_weight * lm_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            last = {"loss": loss.item(), "letter_loss": letter_loss.item(), "lm_loss": lm_loss.item()}
            window.append(last["letter_loss"])
            if step % eval_every == 0 or step == steps:
                mean_letter = sum(window) / len(window)
                window = []
                record = {"step": step, **{k: round(v, 6) for k, v in last.items()},
                          "mean_letter_loss": round(mean_letter, 6)}
                if mean_letter < eval_below or step == steps:
                    accuracy = evaluate()
                    record["accuracy"] = accuracy
                    streak = streak + 1 if accuracy == 1.0 else 0
                history.append(record)
                log.info("demo model step %d: %s", step, record)
                if streak >= patience:
                    break
        if accuracy is None or "accuracy" not in history[-1]:
            accuracy = evaluate()
        model.eval()

        metrics = {
            "seed": seed,
            "steps": step,
            "max_steps": steps,
            "stopped_early": step < steps,
            "final_loss": last["loss"],
            "final_letter_loss": last["letter_loss"],
            "final_lm_loss": last["lm_loss"] if (lm_rows or prompt_lm) else None,
            "accuracy": accuracy,
            "prompts": len(pairs),
            "statements": len(lm_rows),
            "vocab_size": len(tokenizer),
            "model": {"arch": "llama", "layers": layers, "hidden": hidden, "intermediate": intermediate,
                      "heads": heads, "parameters": sum(p.numel() for p in model.parameters())},
            "training": {"batch_size": batch_size, "lm_batch_size": lm_batch_size, "lr": lr, "warmup": warmup,
                         "augment": augment, "lm_weight": lm_weight, "prompt_lm": prompt_lm, "eval_every": eval_every,
                         "eval_below": eval_below, "patience": patience, "threads": threads},
            "history": history,
        }
        _save_atomically(model, tokenizer, metrics, out_dir)
    # the wall time is returned for logs and provenance, never written beside the model (a
    # rerun must write the same bytes)
    return {**metrics, "seconds": round(time.perf_counter() - started, 3)}


def _save_atomically(model, tokenizer, metrics: dict, out_dir: Path) -> None:
    """save_pretrained into a temporary sibling directory, then swap it into place (with the
    permissions of every other output). A failed write (a full disk) names the directory and
    leaves nothing behind."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise output_error(out_dir, exc) from exc
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / METRICS_FILE, metrics)
        share_permissions(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "model")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(out_dir, exc) from exc
    except SafetensorError as exc:  # the weights' writer reports I/O errors (ENOSPC) this way
        raise OutputError(f"cannot write {out_dir}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def train_demo_from_datasets(dataset_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                             world_root: str | os.PathLike | None = None, **options) -> dict:
    """Train the demo model on built dataset files (docs/formats.md "Dataset", JSONL).

    With `world_root`, the world's `statements.txt` adds every world word to the tokenizer, so
    held-out prompts (e.g. the `val` split) tokenise without unknown words. Other keyword options
    go to `train_demo_model`.
    """
    from .world import read_statements
    from ..io import read_jsonl

    queries = [q for path in dataset_paths for q in read_jsonl(path)]
    vocabulary = list(options.pop("vocabulary_texts", ()))
    if world_root is not None:
        vocabulary += read_statements(world_root)
    return train_demo_model(pairs_from_queries(queries), out_dir, vocabulary_texts=vocabulary, **options)
