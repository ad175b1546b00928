"""Prompt rendering, option parsing and per-query seeded randomness shared by all dataset builders.

Every prompt of both datasets has the same layout (the one of the authors' released files):

    {instruction}
    {question_line}
    {question}
     A. {option}
     B. {option}
     C. {option}
     D. {option}

    [{closing}
    ]{response}

The closing cue is used by the language dataset only ("which option is [Y] most likely to be?").
Keeping rendering and parsing in one place makes the released prompts and our own rebuilt prompts
comparable character for character.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import InputError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class PromptTemplate:
    """The pieces of one instruction template (see the module docstring for the layout)."""

    instruction: str
    question_line: str
    response: str
    closing: str | None = None

    @classmethod
    def coerce(cls, value: "PromptTemplate | Mapping[str, Any]", *, where: str) -> "PromptTemplate":
        """Accept a template or a dict with the same keys (as given in a config); `where` names it."""
        if isinstance(value, PromptTemplate):
            return value
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: a template must be a mapping, got {type(value).__name__}")
        allowed = {"instruction", "question_line", "response", "closing"}
        unknown = set(value) - allowed
        if unknown:
            raise InputError(f"{where}: unknown template keys {sorted(unknown)} (allowed: {sorted(allowed)})")
        for key in ("instruction", "question_line", "response"):
            if not isinstance(value.get(key), str) or not value[key]:
                raise InputError(f"{where}: template key {key!r} must be a non-empty string")
        closing = value.get("closing")
        if closing is not None and not isinstance(closing, str):
            raise InputError(f"{where}: template key 'closing' must be a string or null")
        return cls(value["instruction"], value["question_line"], value["response"], closing or None)


def render_prompt(template: PromptTemplate, question: str, options: Sequence[str]) -> str:
    """Render one raw prompt string (no chat template) with the options in letter order."""
    if len(options) != len(LETTERS):
        raise InputError(f"a prompt needs {len(LETTERS)} options, got {len(options)}")
    option_lines = "".join(f" {letter}. {text}\n" for letter, text in zip(LETTERS, options))
    prompt = f"{template.instruction}\n{template.question_line}\n{question}\n{option_lines}\n"
    if template.closing:
        prompt += template.closing + "\n"
    return prompt + template.response


def render_templates(
    templates: Sequence[PromptTemplate],
    question: str,
    options_per_template: Sequence[Sequence[str]],
    gold: str,
) -> tuple[list[str], list[str], list[list[str]]]:
    """A query's (prompts, gold letters, option lists): template k rendered with the k-th
    option order, and the letter at which `gold` stands in it."""
    prompts, answers, options = [], [], []
    for template, order in zip(templates, options_per_template, strict=True):
        order = list(order)
        prompts.append(render_prompt(template, question, order))
        answers.append(LETTERS[order.index(gold)])
        options.append(order)
    return prompts, answers, options


# The option block: "\n A. x\n B. y\n C. z\n D. w\n\n" (an option may itself span lines).
_OPTION_BLOCK = re.compile(r"\n A\. (.*?)\n B\. (.*?)\n C\. (.*?)\n D\. (.*?)\n\n", re.DOTALL)


def parse_options(prompt: str) -> list[str] | None:
    """The four option texts of a rendered prompt, in letter order; None if there is no option block."""
    match = _OPTION_BLOCK.search(prompt)
    if match is None:
        return None
    return list(match.groups())


def derive_rng(seed: int, *keys: Any) -> random.Random:
    """A `random.Random` determined by the seed and the keys only.

    Seeding from a hash of (seed, keys) — e.g. (seed, "mmlu", query id, template index) — gives each
    query and template its own stream, so adding a subject, a language or a template never changes
    the options drawn for any other query, and results do not depend on iteration order.
    """
    payload = json.dumps([seed, *keys], ensure_ascii=False, separators=(",", ":"))
    return random.Random(hashed_seed(payload))


def hashed_seed(text: str) -> int:
    """A stable 64-bit seed from `text`: the first 8 bytes of its SHA-256 (not Python's salted
    `hash`), so reruns, shards and machines agree."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
