"""Tiny Hugging Face models and word-level tokenizers built locally, for tests and benchmarks.

No hub access is needed: a model is built from a config with random weights and a word-level
tokenizer is trained with `tokenizers` on a small corpus, both saved with `save_pretrained` so that
callers load them through the same `from_pretrained` path that real hub models take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..datasets.render import LETTERS

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def train_word_tokenizer(corpus: Iterable[str], vocab_size: int = 4000):
    """A word-level `PreTrainedTokenizerFast` (BOS added) trained on `corpus`.

    Words and single punctuation marks are tokens; the option letters A-D are always single
    tokens, and so is " A"-style input because whitespace is only a separator.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    counts: dict[str, int] = {}
    for text in corpus:
        for word, _ in pre.pre_tokenize_str(text):
            counts[word] = counts.get(word, 0) + 1
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + LETTERS)}
    # Most frequent words first, ties broken alphabetically: the same corpus gives the same ids.
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def build_model(arch: str, vocab_size: int, *, layers: int = 2, hidden: int = 32,
                intermediate: int = 64, heads: int = 4, kv_heads: int | None = None,
                max_positions: int = 512, sliding_window: int = 8, seed: int = 0):
    """A randomly initialised causal LM of family `arch` ("llama", "mistral", "gpt2", "qwen2",
    "gpt_neox", "opt", "phi", "gemma", "gemma2", "gemma3") in float32 eval mode.
    `sliding_window` applies to the sliding-window layers of Gemma 2 / 3 (small, so that tests
    with short prompts exercise it)."""
    import transformers as tf

    torch.manual_seed(seed)
    kv = kv_heads if kv_heads is not None else heads
    common_llama = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
        max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    if arch == "llama":
        config = tf.LlamaConfig(**common_llama)
    elif arch == "mistral":
        config = tf.MistralConfig(**common_llama, sliding_window=None)
    elif arch == "qwen2":
        config = tf.Qwen2Config(**common_llama)
    elif arch == "gemma":
        config = tf.GemmaConfig(**common_llama, head_dim=hidden // heads)
    elif arch == "gemma2":  # soft-capped attention and logits, sliding-window and global layers
        config = tf.Gemma2Config(**common_llama, head_dim=hidden // heads, sliding_window=sliding_window,
                                 query_pre_attn_scalar=hidden // heads,
                                 attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    elif arch == "gemma3":  # QK-norm, local and global rotary bases, every 2nd layer global here
        config = tf.Gemma3TextConfig(
            **common_llama, head_dim=hidden // heads, sliding_window=sliding_window,
            query_pre_attn_scalar=hidden // heads,
            layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention"
                         for i in range(layers)])
    elif arch == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_inner=intermediate,
                               n_layer=layers, n_head=heads, n_positions=max_positions,
                               bos_token_id=1, eos_token_id=2, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0)
    elif arch == "gpt_neox":
        config = tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden,
                                  intermediate_size=intermediate, num_hidden_layers=layers,
                                  num_attention_heads=heads, max_position_embeddings=max_positions,
                                  bos_token_id=1, eos_token_id=2)
    elif arch == "opt":
        config = tf.OPTConfig(vocab_size=vocab_size, hidden_size=hidden, ffn_dim=intermediate,
                              num_hidden_layers=layers, num_attention_heads=heads,
                              max_position_embeddings=max_positions, word_embed_proj_dim=hidden,
                              bos_token_id=1, eos_token_id=2, pad_token_id=3, dropout=0.0)
    elif arch == "phi":
        config = tf.PhiConfig(vocab_size=vocab_size, hidden_size=hidden,
                              intermediate_size=intermediate, num_hidden_layers=layers,
                              num_attention_heads=heads, max_position_embeddings=max_positions,
                              bos_token_id=1, eos_token_id=2)
    else:
        raise ValueError(f"unknown tiny-model family {arch!r}")
    model = tf.AutoModelForCausalLM.from_config(config)
    return model.eval()


def save_tiny(directory: str | Path, arch: str = "llama", corpus: Iterable[str] | None = None,
              **model_kwargs) -> Path:
    """Train a tokenizer on `corpus`, build a tiny `arch` model sized to it, save both to
    `directory` with `save_pretrained`, and return the directory."""
    directory = Path(directory)
    corpus = list(corpus) if corpus is not None else [
        "You will be asked a multiple-choice question . Respond with the letter .",
        "Question : what is the answer ? A . one B . two C . three D . four Response :",
    ]
    tok = train_word_tokenizer(corpus)
    model = build_model(arch, vocab_size=len(tok), **model_kwargs)
    tok.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory
