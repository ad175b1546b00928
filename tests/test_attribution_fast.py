"""The fast last-token staircase IG equals the reference (released) algorithm."""

import logging

import pytest
import torch

from qrnca.attribution import (
    UnsupportedModelError,
    fast_ig,
    ig_alphas,
    last_token_state,
    reference_ig,
    supports_fast,
)
from qrnca.attribution import fast as fast_module
from qrnca.tiny_models import build_model


VOCAB = 48
TARGET = 7
# (family, build kwargs): Mistral and Qwen2 with grouped-query attention (kv_heads < heads)
FAMILIES = [
    ("llama", {}),
    ("mistral", {"kv_heads": 2}),
    ("qwen2", {"kv_heads": 2}),
    ("gemma", {"kv_heads": 1}),
    # Gemma 2: soft-capped attention and logits; Gemma 3: QK-norm, local/global rotary bases. Both
    # normalise attention and FFN outputs and have sliding-window layers (window 8 < prompt 14).
    ("gemma2", {"kv_heads": 1}),
    ("gemma3", {"kv_heads": 1}),
    ("gpt2", {}),
]


def sharpened(model, seed=0, dtype=torch.float32):
    """Re-draw the weights at a scale where attention is peaked and positions matter, so that a
    wrong position, head grouping or prefix would show (the default 0.02 init is nearly flat)."""
    from transformers.pytorch_utils import Conv1D

    gen = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen:  # tied unembedding: keep the embedding's draw
                    continue
                seen.add(id(p))
                if p.dim() >= 2:
                    if isinstance(module, torch.nn.Embedding):
                        std = 1.0
                    else:  # Conv1D (GPT-2) stores (in, out), Linear (out, in)
                        std = 1.5 * (p.shape[0] if isinstance(module, Conv1D) else p.shape[1]) ** -0.5
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                elif name == "bias":
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                else:  # norm gains
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    return model.to(dtype).eval().requires_grad_(False)


def make(arch, seed=0, dtype=torch.float32, layers=3, **kw):
    kwargs = dict(layers=layers, hidden=32, intermediate=48, heads=4)
    kwargs.update(kw)
    return sharpened(build_model(arch, vocab_size=VOCAB, seed=seed, **kwargs), seed, dtype)


def prompt(length=14, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (1, length), generator=gen)
    ids[0, 0] = 1  # BOS
    return ids


def coarse(ig, t=0.2):
    return set(map(tuple, (ig > t * ig.max()).nonzero().tolist()))


@pytest.mark.parametrize("grid", ["released", "paper"])
@pytest.mark.parametrize("arch,kw", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_fast_equals_reference_float32(arch, kw, grid):
    model = make(arch, **kw)
    ids = prompt()
    ref = reference_ig(model, ids, TARGET, steps=8, ig_grid=grid)
    fast = fast_ig(model, ids, TARGET, steps=8, ig_grid=grid)
    scale = ref.ig.abs().max()
    assert scale > 0
    assert (fast.ig - ref.ig).abs().max() <= 1e-4 * scale
    assert coarse(fast.ig) == coarse(ref.ig) and len(coarse(ref.ig)) > 0
    assert fast.p0 == pytest.approx(ref.p0, rel=1e-5)
    assert (fast.activations - ref.activations).abs().max() <= 1e-5 * ref.activations.abs().max()


def test_fast_equals_reference_float64_gqa():
    model = make("mistral", dtype=torch.float64, kv_heads=2, seed=3)
    ids = prompt(17, seed=3)
    ref = reference_ig(model, ids, TARGET, steps=8)
    fast = fast_ig(model, ids, TARGET, steps=8)
    assert (fast.ig.double() - ref.ig.double()).abs().max() <= 1e-6 * ref.ig.abs().max()


def test_chunked_rows_equal_one_batch():
    model = make("llama", kv_heads=2)
    ids = prompt()
    whole = fast_ig(model, ids, TARGET, steps=6)
    for max_rows in (1, 5, 7):  # chunks that cut through a layer's rows
        chunked = fast_ig(model, ids, TARGET, steps=6, max_rows=max_rows)
        assert (chunked.ig - whole.ig).abs().max() <= 1e-5 * whole.ig.abs().max()


def test_out_of_memory_halves_the_chunk(monkeypatch, caplog):
    model = make("llama")
    ids = prompt()
    whole = fast_ig(model, ids, TARGET, steps=4)
    real = fast_module._staircase_gradients
    seen = []

    def flaky(runner, ctx, clean, rows, target):
        seen.append(len(rows))
        if len(rows) > 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(runner, ctx, clean, rows, target)

    monkeypatch.setattr(fast_module, "_staircase_gradients", flaky)
    with caplog.at_level(logging.WARNING, logger="qrnca.attribution"):
        result = fast_ig(model, ids, TARGET, steps=4)
    assert seen[:3] == [12, 6, 3] and max(seen[2:]) <= 3
    assert "out of memory" in caplog.text
    assert (result.ig - whole.ig).abs().max() <= 1e-5 * whole.ig.abs().max()


def test_other_errors_are_not_retried(monkeypatch):
    model = make("llama")

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_module, "_staircase_gradients", broken)
    with pytest.raises(RuntimeError, match="boom"):
        fast_ig(model, prompt(), TARGET, steps=2)


def test_sliding_window_attention():
    """Mistral with a window shorter than the prompt: the last token sees only the window."""
    import transformers

    config = transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, bos_token_id=1,
        eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    model = sharpened(transformers.AutoModelForCausalLM.from_config(config))
    ids = prompt(12)
    ref = reference_ig(model, ids, TARGET, steps=4)
    fast = fast_ig(model, ids, TARGET, steps=4)
    assert (fast.ig - ref.ig).abs().max() <= 1e-4 * ref.ig.abs().max()
    # and the window matters: the same model without it gives other scores
    model.config.sliding_window = None
    full = reference_ig(model, ids, TARGET, steps=4)
    assert (full.ig - ref.ig).abs().max() > 1e-2 * ref.ig.abs().max()


def test_single_token_prompt_has_no_prefix():
    model = make("llama", layers=2)
    ids = torch.tensor([[1]])
    ref = reference_ig(model, ids, TARGET, steps=4)
    fast = fast_ig(model, ids, TARGET, steps=4)
    assert (fast.ig - ref.ig).abs().max() <= 1e-4 * ref.ig.abs().max()


def test_depends_on_position_and_prefix():
    """Sanity of the test models themselves: IG changes when the prefix changes, so agreement
    above is not an accident of flat attention."""
    model = make("llama")
    a = fast_ig(model, prompt(14, seed=0), TARGET, steps=4).ig
    b = fast_ig(model, prompt(14, seed=1), TARGET, steps=4).ig
    assert (a - b).abs().max() > 0.1 * a.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs_and_tracks_float32(dtype):
    model32 = make("llama", kv_heads=2)
    ids = prompt()
    exact = fast_ig(model32, ids, TARGET, steps=8).ig
    low = fast_ig(make("llama", kv_heads=2, dtype=dtype), ids, TARGET, steps=8)
    assert low.ig.dtype == torch.float32 and torch.isfinite(low.ig).all()
    corr = torch.corrcoef(torch.stack([low.ig.flatten(), exact.flatten()]))[0, 1]
    assert corr > 0.95


def test_weights_never_get_gradients_and_flags_are_restored():
    model = make("gpt2")
    model.requires_grad_(True)
    fast_ig(model, prompt(), TARGET, steps=2)
    reference_ig(model, prompt(), TARGET, steps=2, layers=[0])
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch", ["gpt_neox", "opt", "phi"])
def test_unsupported_family_is_a_clear_error(arch):
    model = build_model(arch, vocab_size=VOCAB, layers=1, hidden=16, intermediate=24, heads=2)
    assert not supports_fast(model)
    with pytest.raises(UnsupportedModelError, match="reference"):
        fast_ig(model, prompt(), TARGET, steps=2)


def test_last_token_state_matches_full_forward():
    model = make("qwen2", kv_heads=2)
    ids = prompt()
    state = last_token_state(model, ids, TARGET)
    probs = torch.softmax(model(ids).logits[0, -1], -1)
    assert state.p0 == pytest.approx(float(probs[TARGET]), rel=1e-5)


def test_alpha_grids():
    torch.testing.assert_close(ig_alphas(5, "released"), torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(ig_alphas(4, "paper"), torch.tensor([0.25, 0.5, 0.75, 1.0]))
    from qrnca.errors import InputError
    with pytest.raises(InputError, match="ig_grid"):
        ig_alphas(4, "trapezoid")


def test_qwen3_with_head_norms():
    import transformers

    config = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, bos_token_id=1,
        eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    model = sharpened(transformers.AutoModelForCausalLM.from_config(config))
    assert hasattr(model.model.layers[0].self_attn, "q_norm")
    ids = prompt()
    ref = reference_ig(model, ids, TARGET, steps=4)
    fast = fast_ig(model, ids, TARGET, steps=4)
    assert (fast.ig - ref.ig).abs().max() <= 1e-4 * ref.ig.abs().max()
