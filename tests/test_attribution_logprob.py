"""Yu & Ananiadou's log-probability increase against a direct float64 recomputation."""

import pytest
import torch

from qrnca.attribution import hooked_clean_state, last_token_state, logprob_increase
from qrnca.attribution.logprob import frozen_norm_logits
from qrnca.models import layouts
from qrnca.models.tiny import build_model


ALL_FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3", "gpt2", "gpt_neox", "opt",
                "phi"]
# longer than the tiny Gemma 2 / 3 sliding window (8): the local layers see only part of it
IDS = torch.tensor([[1, 5, 9, 12, 7, 20, 33, 8, 14, 22, 6, 17]])
TARGET = 6


def _model(arch):
    model = build_model(arch, vocab_size=40, layers=2, hidden=16, intermediate=24, heads=2)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.requires_grad_(False)


def _frozen(norm, x0):
    """(gain, mean, scale, bias) of a norm written out by hand in float64, frozen at x0."""
    x0 = x0.double()
    gain = norm.weight.double()
    if isinstance(norm, torch.nn.LayerNorm):
        return gain, x0.mean(), torch.sqrt(x0.var(unbiased=False) + norm.eps), norm.bias.double()
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if type(norm).__name__.startswith("Gemma"):  # written out here, not read from the registry
        gain = 1.0 + gain
    return gain, 0.0, torch.sqrt((x0 ** 2).mean() + eps), 0.0


def _direct(model, state, layer, index, target):
    """Imp from its definition, in float64, with the final norm (and, for Gemma 2 / 3, the norm
    on the FFN output, both frozen at the clean run) and the logit soft-cap written out by hand."""
    gain, mean, scale, bias = _frozen(layouts.final_norm(model), state.final_resid)
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def logprob(x):
        logits = (gain * (x - mean) / scale + bias) @ head.weight.double().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias.double()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, -1)[target]

    h = state.resid_mid[layer].double()
    v = layouts.down_proj_weight(model, layer)[:, index].double()
    added = state.activations[layer, index].double() * v
    post = getattr(layouts.decoder_layers(model)[layer], "post_feedforward_layernorm", None)
    if post is not None:
        post_gain, _, post_scale, _ = _frozen(post, state.ffn_output[layer])
        added = post_gain * added / post_scale
    return float(logprob(h + added) - logprob(h))


@pytest.mark.parametrize("arch", ALL_FAMILIES)
def test_logprob_increase_matches_direct_recomputation(arch):
    model = _model(arch)
    state = hooked_clean_state(model, IDS, TARGET)
    other = hooked_clean_state(model, IDS[:, :5], 11)
    scores = logprob_increase(model, [state, other], [TARGET, 11], neuron_chunk=10)
    assert scores.shape == (2, 2, 24) and scores.dtype == torch.float32
    assert scores.abs().max() > 1e-3  # not trivially zero
    gen = torch.Generator().manual_seed(0)
    for layer, index in zip(torch.randint(0, 2, (8,), generator=gen).tolist(),
                            torch.randint(0, 24, (8,), generator=gen).tolist()):
        assert float(scores[0, layer, index]) == pytest.approx(
            _direct(model, state, layer, index, TARGET), abs=1e-5)
        assert float(scores[1, layer, index]) == pytest.approx(
            _direct(model, other, layer, index, 11), abs=1e-5)


@pytest.mark.parametrize("arch", ALL_FAMILIES)
def test_frozen_norm_equals_the_model_at_the_clean_residual(arch):
    model = _model(arch)
    state = hooked_clean_state(model, IDS, TARGET)
    with torch.no_grad():
        logits = model(IDS).logits[0, -1]
    torch.testing.assert_close(frozen_norm_logits(model, state.final_resid, state.final_resid),
                               logits, rtol=1e-5, atol=1e-4)
    assert state.p0 == pytest.approx(float(torch.softmax(logits, -1)[TARGET]), rel=1e-5)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3", "gpt2"])
def test_last_token_pass_gives_the_same_state(arch):
    model = _model(arch)
    hooked = hooked_clean_state(model, IDS, TARGET)
    fast = last_token_state(model, IDS, TARGET)
    pairs = [(fast.activations, hooked.activations), (fast.resid_mid, hooked.resid_mid),
             (fast.final_resid, hooked.final_resid)]
    if hooked.ffn_output is not None or fast.ffn_output is not None:
        pairs.append((fast.ffn_output, hooked.ffn_output))
    for a, b in pairs:
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert fast.p0 == pytest.approx(hooked.p0, rel=1e-5)


@pytest.mark.parametrize("spread", [1.0, 60.0])
def test_log_mean_exp_equals_a_float64_logsumexp_even_where_float32_underflows(spread):
    """The blocked, rescaled sum equals log Σ_v p(v) exp(c D_vi) computed plainly in float64;
    with a very peaked p (spread 60) and shifts towards rare tokens, some columns underflow in
    float32 and take the exact fallback."""
    from qrnca.attribution.logprob import log_mean_exp

    gen = torch.Generator().manual_seed(0)
    vocab, width, prompts = 3000, 37, 3
    directions = torch.randn(vocab, width, generator=gen) * 4
    logp = torch.log_softmax(torch.randn(prompts, vocab, generator=gen) * spread, dim=-1)
    coeffs = torch.randn(prompts, width, generator=gen) * 3
    coeffs[:, 0] = 0.0  # an inactive neuron: log Σ p = 0
    got = log_mean_exp(directions, logp, coeffs, rows=512)
    want = torch.logsumexp(logp.double()[:, :, None]
                           + coeffs.double()[:, None, :] * directions.double()[None], dim=1)
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
    assert got[:, 0].abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gemma2", "gpt2", "opt"])
def test_top_k_with_pruning_equals_the_full_computation(arch):
    """The pruned top-k (bounds, then exact values where they matter) picks the same neurons
    with the same summed scores as summing the full computation; most neurons are pruned."""
    from qrnca.attribution.job import _top_k
    from qrnca.attribution.logprob import direction_ranges, logprob_top_k

    model = build_model(arch, vocab_size=40, layers=3, hidden=16, intermediate=64, heads=2)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    queries = [[(IDS, TARGET), (IDS[:, :9], 11), (IDS[:, 2:], 3)], [(IDS[:, :7], 5)]]
    states = [[hooked_clean_state(model, ids, t) for ids, t in q] for q in queries]
    targets = [[t for _, t in q] for q in queries]
    k = 10
    pruned = logprob_top_k(model, states, targets, k, direction_ranges(model))
    for q, dense in enumerate(pruned):
        full = logprob_increase(model, states[q], targets[q]).sum(dim=0)
        got, want = _top_k(dense.numpy(), k), _top_k(full.numpy(), k)
        assert got["neurons"] == want["neurons"]
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-5, abs=1e-6)
        if arch != "gemma2":  # soft-capped logits are computed in full
            assert torch.isinf(dense).float().mean() > 0.3


def test_top_k_of_a_query_does_not_depend_on_the_batch_it_is_computed_in():
    """The batch size is an execution setting: a query's stored block must be the same bytes
    whichever other queries share its batch (matrix products of a varying width would differ in
    the last bits, so the exact part always uses chunks of one width)."""
    from qrnca.attribution.job import _top_k
    from qrnca.attribution.logprob import direction_ranges, logprob_top_k

    model = build_model("llama", vocab_size=3000, layers=2, hidden=96, intermediate=640, heads=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    prompts = [torch.randint(4, 3000, (1, 12), generator=gen) for _ in range(7)]
    states = [hooked_clean_state(model, ids, 7 + i) for i, ids in enumerate(prompts)]
    ranges = direction_ranges(model)
    alone = logprob_top_k(model, [states[:3]], [[7, 8, 9]], 40, ranges)[0]
    shared = logprob_top_k(model, [states[3:5], states[:3], states[5:]], [[10, 11], [7, 8, 9], [12, 13]],
                           40, ranges)[1]
    assert _top_k(alone.numpy(), 40) == _top_k(shared.numpy(), 40)
