"""Loading models by config and resolving the option letters to token ids.

A model is described in the config by a dict: `name`, then either `hf_id` (a hub id, with a pinned
`revision`) or `path` (a local directory written with `save_pretrained`), and `dtype`. Both go
through `AutoModelForCausalLM.from_pretrained`, so the demo model is loaded exactly like a hub
model. `trust_remote_code` is never enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ..datasets.render import LETTERS
from ..errors import InputError, LetterTokenError, ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
ANSWER_TOKEN_MODES = ("bare", "leading_space")
PROMPT_FORMATS = ("raw", "chat")


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise InputError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def model_source(spec: Mapping) -> tuple[str, str | None]:
    """(`from_pretrained` argument, revision) of a model spec; a missing local path is an error."""
    if spec.get("path"):
        path = Path(spec["path"])
        if not (path / "config.json").exists():
            raise InputError(f"model {spec.get('name')!r}: no config.json in local path {path}")
        return str(path), None
    if spec.get("hf_id"):
        return spec["hf_id"], spec.get("revision")
    raise InputError(f"model {spec.get('name')!r}: give either 'hf_id' or 'path'")


def load_model(spec: Mapping, device: str | torch.device = "cpu", dtype: str | None = None):
    """Load (model, tokenizer) for a model spec, in eval mode with gradients of weights disabled.
    Weights or a tokenizer that cannot be read (a truncated download, a corrupt file) raise
    `ModelLoadError` naming the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, revision = model_source(spec)
    torch_dtype = resolve_dtype(dtype or spec.get("dtype", "float32"))
    kwargs = {"revision": revision} if revision else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises, name the files
        raise ModelLoadError(f"model {spec.get('name')!r}: cannot load the tokenizer from "
                             f"{source}: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"model {spec.get('name')!r}: cannot load the weights "
                             f"{_unreadable_weights(source) or 'from ' + source}: {exc}") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


def _unreadable_weights(source: str) -> str | None:
    """The first weight file of a local model directory that safetensors cannot read (a
    truncated or corrupt file), else None."""
    path = Path(source)
    if not path.is_dir():
        return None
    from safetensors import safe_open

    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as fh:
                for key in fh.keys():
                    fh.get_slice(key)
        except Exception:  # noqa: BLE001 - any failure names this file
            return str(weights)
    return None


def _single_id(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def letter_token_ids(tokenizer, mode: str = "bare", letters=LETTERS) -> dict[str, int]:
    """Token id of each option letter (docs/method.md §2, decision `answer_token`).

    `bare`: the vocabulary entry of the bare letter ("A"), as in the released code.
    `leading_space`: the piece a model emits after "Response:" (SentencePiece "▁A", byte-level BPE
    "ĠA"), falling back to encoding " A". A letter that is not exactly one token is an error.
    """
    if mode not in ANSWER_TOKEN_MODES:
        raise InputError(f"answer_token must be one of {ANSWER_TOKEN_MODES}, got {mode!r}")
    vocab = tokenizer.get_vocab()
    out: dict[str, int] = {}
    for letter in letters:
        if mode == "bare":
            candidates = [letter]
            fallback = _single_id(tokenizer, letter)
        else:
            candidates = ["▁" + letter, "Ġ" + letter]
            fallback = _single_id(tokenizer, " " + letter)
        token_id = next((vocab[c] for c in candidates if c in vocab), fallback)
        if token_id is None or token_id == tokenizer.unk_token_id:
            pieces = tokenizer.tokenize(letter if mode == "bare" else " " + letter)
            raise LetterTokenError(
                f"option letter {letter!r} is not a single token of {type(tokenizer).__name__} "
                f"in answer_token mode {mode!r} (it tokenizes as {pieces}); try the other mode"
            )
        out[letter] = int(token_id)
    if len(set(out.values())) != len(out):
        raise LetterTokenError(f"option letters share token ids: {out}")
    return out


@dataclass(frozen=True)
class PromptEncoding:
    """How a model is asked: the prompt format and the token of each option letter.

    `prompt_format` `raw` (the released code): the prompt string as it is, with whatever special
    tokens the model's own tokenizer adds (Llama-2 and Gemma add BOS; SmolLM2 adds none); `chat`:
    the prompt as one user turn of the tokenizer's chat template, followed by the template's
    assistant-turn opener. `answer_token`: see `letter_token_ids`.
    """

    answer_token: str = "bare"
    prompt_format: str = "raw"

    def __post_init__(self):
        if self.answer_token not in ANSWER_TOKEN_MODES:
            raise InputError(f"answer_token must be one of {ANSWER_TOKEN_MODES}, got "
                             f"{self.answer_token!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise InputError(f"prompt_format must be one of {PROMPT_FORMATS}, got "
                             f"{self.prompt_format!r}")

    @classmethod
    def of(cls, settings: Mapping | None) -> "PromptEncoding":
        """From a mapping with the keys `answer_token` and `prompt_format` (either may be absent)."""
        settings = dict(settings or {})
        unknown = set(settings) - {"answer_token", "prompt_format"}
        if unknown:
            raise InputError(f"unknown prompt-encoding settings {sorted(unknown)}")
        return cls(**settings)

    def as_dict(self) -> dict:
        return {"answer_token": self.answer_token, "prompt_format": self.prompt_format}

    def text(self, tokenizer, prompt: str) -> str:
        """The text the model reads for `prompt` (the chat template applied, if chosen)."""
        if self.prompt_format == "raw":
            return prompt
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(f"prompt_format 'chat' needs a chat template, and "
                             f"{type(tokenizer).__name__} "
                             f"({getattr(tokenizer, 'name_or_path', '?')}) has none; use 'raw'")
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)

    def ids(self, tokenizer, prompt: str, continuation: str = "") -> torch.Tensor:
        """Token ids (1, T) of `prompt` (then `continuation`, e.g. an answer letter, as the
        model's own reply) in this encoding."""
        text = self.text(tokenizer, prompt) + continuation
        ids = tokenizer(text, return_tensors="pt",
                        add_special_tokens=self.prompt_format == "raw").input_ids
        if ids.shape[1] == 0:
            raise InputError(f"prompt {prompt[:60]!r} encodes to no tokens")
        return ids

    def letters(self, tokenizer, letters=LETTERS) -> dict[str, int]:
        return letter_token_ids(tokenizer, self.answer_token, letters)

    def reply(self, letter: str) -> str:
        """The text of answering `letter` right after the prompt: after a raw prompt ending in a
        cue such as "Response:", a space and the letter; in a chat, the assistant turn's letter."""
        return letter if self.prompt_format == "chat" else " " + letter


def download_model(spec: Mapping) -> dict:
    """Download a hub model's files at its pinned revision into the Hugging Face cache (for a
    login node with internet; compute nodes then load it offline with HF_HUB_OFFLINE=1)."""
    from huggingface_hub import snapshot_download

    if not spec.get("hf_id") or not spec.get("revision"):
        raise InputError(f"model {spec.get('name')!r}: download needs 'hf_id' and a pinned 'revision'")
    path = snapshot_download(
        repo_id=spec["hf_id"],
        revision=spec["revision"],
        allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"],
    )
    return {"name": spec["name"], "hf_id": spec["hf_id"], "revision": spec["revision"],
            "resolved_revision": Path(path).name, "path": path}
