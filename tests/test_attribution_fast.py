"""The fast last-token staircase IG equals the reference (released) algorithm."""

import logging

import pytest
import torch

from qrnca.attribution import (UnsupportedModelError, fast_ig, fast_ig_batch, ig_alphas,
                               last_token_state, reference_ig, supports_fast)
from qrnca.attribution import fast as fast_module
from qrnca.models.tiny import build_model


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


# ------------------------------------------------------------------ several prompts per staircase

# Different lengths (Gemma 2/3's window is 8: three prompts longer, one shorter, one without any
# prefix) and two prompts of the same length, so that a row reading another prompt's prefix, its
# rotary angles or its target would show.
BATCH_LENGTHS = (14, 9, 20, 1, 14)


def batch_prompts(model, lengths=BATCH_LENGTHS):
    """Prompts of the given lengths and, per prompt, a different target: its clean top-1, top-2 or
    top-3 token (targets with some probability keep the comparison well conditioned)."""
    ids = [prompt(length, seed=10 + i) for i, length in enumerate(lengths)]
    with torch.no_grad():
        targets = [int(model(p).logits[0, -1].argsort(descending=True)[i % 3])
                   for i, p in enumerate(ids)]
    return ids, targets


def relative_error(result, expected):
    return float((result.ig.double() - expected.ig.double()).abs().max() / expected.ig.abs().max())


@pytest.mark.parametrize("arch,kw", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_batch_equals_single_float32(arch, kw):
    model = make(arch, **kw)
    ids, targets = batch_prompts(model)
    single = [fast_ig(model, p, t, steps=8) for p, t in zip(ids, targets)]
    batch = fast_ig_batch(model, ids, targets, steps=8)
    assert len(batch) == len(single)
    for b, s in zip(batch, single):
        assert relative_error(b, s) <= 1e-5
        assert torch.equal(b.activations, s.activations)  # each prompt's own clean pass
        assert b.p0 == s.p0 and b.state is not None and b.state.p0 == b.p0
        assert torch.equal(b.state.resid_mid, s.state.resid_mid)
    # the prompts' attributions differ, so a mix-up could not pass unnoticed
    assert relative_error(batch[0], single[4]) > 1e-2


@pytest.mark.parametrize("arch,kw", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_batch_chunks_across_prompts_float64(arch, kw):
    """Passes of max_rows rows that hold pieces of several prompts (or part of one) give every
    prompt its single-prompt IG. A float64 model: what remains is the float32 accumulation of
    the chunks' gradient sums (~1e-7), far below what a row sent to the wrong prefix, position or
    target would cost."""
    model = make(arch, dtype=torch.float64, **kw)
    ids, targets = batch_prompts(model)
    single = [fast_ig(model, p, t, steps=4) for p, t in zip(ids, targets)]
    for max_rows in (5, 30):  # 12 rows per prompt: pieces cut inside a prompt; pieces packed
        batch = fast_ig_batch(model, ids, targets, steps=4, max_rows=max_rows)
        assert max(relative_error(b, s) for b, s in zip(batch, single)) <= 1e-6


def test_batch_chunked_float32_equals_single_chunked_bits():
    """With max_rows, each prompt is cut into the same pieces as `fast_ig(max_rows=...)` alone;
    on this CPU the result is bit for bit the single-prompt one (the job's bytes rely on it)."""
    model = make("llama", kv_heads=2)
    ids, targets = batch_prompts(model, (14, 9, 20))
    for max_rows in (7, 50, 100):  # 24 rows per prompt: pieces of one, two whole, all three
        single = [fast_ig(model, p, t, steps=8, max_rows=max_rows) for p, t in zip(ids, targets)]
        batch = fast_ig_batch(model, ids, targets, steps=8, max_rows=max_rows)
        for b, s in zip(batch, single):
            assert relative_error(b, s) <= 1e-5
            assert torch.equal(b.ig, s.ig)


def test_passes_pack_whole_pieces_of_prompts():
    rows = [(b, layer, a) for b in range(3) for layer in range(3) for a in range(4)]  # 12 each

    def passes(chunk):
        out, start = [], 0
        while start < len(rows):
            part = fast_module._next_pass(rows, start, chunk, lambda r: r[0])
            out.append(part)
            start += len(part)
        return out

    assert [len(p) for p in passes(36)] == [36]
    assert [len(p) for p in passes(30)] == [24, 12]  # two whole prompts, then the third
    assert [len(p) for p in passes(5)] == [5, 5, 2] * 3  # a prompt's own pieces, never merged
    assert [len(p) for p in passes(8)] == [8, 4, 8, 4, 8, 4]  # 4 + 8 > 8: not packed
    assert [len(p) for p in passes(16)] == [12, 12, 12]
    for chunk in (5, 8, 16, 30):
        for part in passes(chunk):
            for b in {r[0] for r in part}:  # the piece of prompt b is a single-prompt cut
                mine = [r for r in part if r[0] == b]
                offset = rows.index(mine[0]) - 12 * b
                assert offset % chunk == 0 and len(mine) <= chunk


def test_batch_out_of_memory_uses_fewer_prompts_per_pass(monkeypatch, caplog):
    model = make("llama", kv_heads=2)
    ids, targets = batch_prompts(model, (14, 9, 20))
    whole = fast_ig_batch(model, ids, targets, steps=4)
    real = fast_module._staircase_batch
    seen = []

    def flaky(runner, prompts, rows):
        seen.append((len(rows), sorted({r[0] for r in rows})))
        if len(rows) > 9:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(runner, prompts, rows)

    monkeypatch.setattr(fast_module, "_staircase_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="qrnca.attribution"):
        result = fast_ig_batch(model, ids, targets, steps=4)
    # 3 prompts x 12 rows: all three in one pass; at 18 rows a pass holds one prompt (two would
    # be 24); then halves of one prompt
    assert seen[:3] == [(36, [0, 1, 2]), (12, [0]), (6, [0])]
    assert all(n == 6 and len(b) == 1 for n, b in seen[2:])
    assert sum(n for n, _ in seen[2:]) == 36
    assert "out of memory" in caplog.text
    for r, w in zip(result, whole):
        assert relative_error(r, w) <= 1e-5


def test_batch_other_errors_are_not_retried_and_bad_input(monkeypatch):
    model = make("llama", layers=2)
    assert fast_ig_batch(model, [], [], steps=2) == []
    with pytest.raises(ValueError, match="2 prompts but 1 target"):
        fast_ig_batch(model, [prompt(), prompt(5)], [TARGET], steps=2)
    from qrnca.errors import InputError
    with pytest.raises(InputError, match="outside the vocabulary"):
        fast_ig_batch(model, [prompt(), prompt(5)], [TARGET, VOCAB], steps=2)

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_module, "_staircase_batch", broken)
    with pytest.raises(RuntimeError, match="boom"):
        fast_ig_batch(model, [prompt()], [TARGET], steps=2)


def test_batch_equals_reference_gemma3_beyond_the_window():
    """The batched path against the oracle directly (not only through fast_ig)."""
    model = make("gemma3", kv_heads=1)
    ids, targets = batch_prompts(model, (14, 5, 20))
    batch = fast_ig_batch(model, ids, targets, steps=4)
    for p, t, b in zip(ids, targets, batch):
        ref = reference_ig(model, p, t, steps=4)
        assert relative_error(b, ref) <= 1e-4
