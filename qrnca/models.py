"""Loading models by config and resolving the option letters to token ids.

A model is described in the config by a dict: `name`, then either `hf_id` (a hub id, with a pinned
`revision`) or `path` (a local directory written with `save_pretrained`), and `dtype`. Both go
through `AutoModelForCausalLM.from_pretrained`, so the demo model is loaded exactly like a hub
model. `trust_remote_code` is never enabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .errors import InputError, LetterTokenError

LETTERS = ("A", "B", "C", "D")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
ANSWER_TOKEN_MODES = ("bare", "leading_space")


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
    """Load (model, tokenizer) for a model spec, in eval mode with gradients of weights disabled."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, revision = model_source(spec)
    torch_dtype = resolve_dtype(dtype or spec.get("dtype", "float32"))
    kwargs = {"revision": revision} if revision else {}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


def _single_id(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def letter_token_ids(tokenizer, mode: str = "bare", letters=LETTERS) -> dict[str, int]:
    """Token id of each option letter (method.md §2, decision `answer_token`).

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


def encode_prompt(tokenizer, prompt: str) -> torch.Tensor:
    """Token ids (1, T) of a raw prompt with the tokenizer's BOS, as in the released code."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    bos = tokenizer.bos_token_id
    if bos is not None and (ids.shape[1] == 0 or ids[0, 0].item() != bos):
        ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)
    return ids


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
