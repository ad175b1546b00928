"""The shared-prefix evaluation of last-position interventions is exact: it matches plain
full-sequence forwards with a hook, for Llama, Mistral (grouped-query attention), GPT-2 and
Gemma 2 / 3 (sliding-window layers whose window, 8, is shorter than the prompts)."""

import numpy as np
import pytest
import torch

from qrnca.errors import InputError
from qrnca.evaluation.interventions import CLEAN, Edit, SharedPrefix, multipliers
from qrnca.models import layouts
from qrnca.models.tiny import build_model

LETTERS = {"A": 4, "B": 5, "C": 6, "D": 7}
ARCHS = {"llama": {}, "mistral": {"kv_heads": 1}, "gpt2": {}, "gemma2": {"kv_heads": 1},
         "gemma3": {"kv_heads": 1}}


def tiny(arch, **kwargs):
    torch.manual_seed(0)
    return build_model(arch, vocab_size=48, layers=3, hidden=32, intermediate=40, heads=4,
                       **{**ARCHS.get(arch, {}), **kwargs})


def prompt_ids(length=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 48, (1, length), generator=g)
    ids[0, 0] = 1
    return ids


def full_forward_probs(model, ids, zero=(), factor=0.0):
    """Reference: the whole sequence, no cache, a hand-written pre-hook scaling the given neurons
    at the last position only."""
    hooks = []
    projections = layouts.down_projections(model)
    for layer in {n[0] for n in zero}:
        idx = [i for l, i in zero if l == layer]

        def hook(module, args, idx=idx):
            x = args[0].clone()
            x[:, -1, idx] = x[:, -1, idx] * factor
            return (x,)

        hooks.append(projections[layer].register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    return torch.softmax(logits.double(), -1)[list(LETTERS.values())].numpy()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_identity_factor_changes_nothing(arch):
    model = tiny(arch)
    ids = prompt_ids()
    result = SharedPrefix(model, ids).letter_probabilities([CLEAN, Edit.of([(0, 1), (2, 5)], 1.0),
                                    Edit.of([(1, 3)], 2.0)], LETTERS, gold="C")
    assert result.letter_probs.shape == (3, 4)
    assert np.array_equal(result.letter_probs[0], result.letter_probs[1])
    assert not np.array_equal(result.letter_probs[0], result.letter_probs[2])
    assert result.gold_probs.tolist() == result.letter_probs[:, 2].tolist()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_matches_full_sequence_hook(arch):
    model = tiny(arch)
    ids = prompt_ids()
    neurons = [(0, 3), (1, 7), (1, 8), (2, 39)]
    result = SharedPrefix(model, ids).letter_probabilities([CLEAN, Edit.of(neurons, 0.0), Edit.of(neurons, 2.0)], LETTERS)
    np.testing.assert_allclose(result.letter_probs[0], full_forward_probs(model, ids), atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.letter_probs[1], full_forward_probs(model, ids, neurons, 0.0),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.letter_probs[2], full_forward_probs(model, ids, neurons, 2.0),
                               atol=1e-6, rtol=0)
    # the edits did something measurable, so the comparison can fail
    assert np.abs(result.letter_probs[1] - result.letter_probs[0]).max() > 1e-6


@pytest.mark.parametrize("arch", list(ARCHS))
def test_batched_rows_equal_one_by_one(arch):
    model = tiny(arch)
    ids = prompt_ids(seed=3)
    rng = np.random.default_rng(0)
    edits = [CLEAN] + [Edit.of([(int(rng.integers(3)), int(rng.integers(40))) for _ in range(4)],
                               float(rng.choice([0.0, 2.0]))) for _ in range(9)]
    prefix = SharedPrefix(model, ids)
    batched = prefix.letter_probabilities(edits, LETTERS, chunk_size=4)
    single = np.stack([prefix.letter_probabilities([e], LETTERS).letter_probs[0] for e in edits])
    np.testing.assert_allclose(batched.letter_probs, single, atol=1e-7, rtol=0)
    assert batched.distinct_rows == 10


def test_duplicate_edits_are_computed_once():
    model = tiny("llama")
    edits = [CLEAN, Edit.of([(0, 1), (1, 2)], 0.0), Edit.of([(1, 2), (0, 1)], 0.0), Edit.of([], 2.0)]
    result = SharedPrefix(model, prompt_ids()).letter_probabilities(edits, LETTERS)
    assert result.distinct_rows == 2
    assert np.array_equal(result.letter_probs[1], result.letter_probs[2])
    assert np.array_equal(result.letter_probs[0], result.letter_probs[3])


def test_one_token_prompt_has_no_prefix():
    model = tiny("llama")
    ids = torch.tensor([[1]])
    result = SharedPrefix(model, ids).letter_probabilities([CLEAN, Edit.of([(0, 0), (2, 3)], 0.0)], LETTERS)
    np.testing.assert_allclose(result.letter_probs[0], full_forward_probs(model, ids), atol=1e-6)
    np.testing.assert_allclose(result.letter_probs[1],
                               full_forward_probs(model, ids, [(0, 0), (2, 3)]), atol=1e-6)


@pytest.mark.parametrize("length", [12, 20, 33])
def test_sliding_window_model_is_exact_within_and_beyond_the_window(length):
    model = tiny("mistral")
    model.config.sliding_window = 16
    ids = prompt_ids(length=length)
    result = SharedPrefix(model, ids).letter_probabilities([CLEAN, Edit.of([(1, 2), (2, 7)], 0.0)], LETTERS)
    np.testing.assert_allclose(result.letter_probs[0], full_forward_probs(model, ids), atol=1e-6)
    np.testing.assert_allclose(result.letter_probs[1],
                               full_forward_probs(model, ids, [(1, 2), (2, 7)]), atol=1e-6)


def test_bad_inputs_name_the_value():
    model = tiny("llama")
    with pytest.raises(InputError, match=r"\(3, 0\)"):
        SharedPrefix(model, prompt_ids()).letter_probabilities([Edit.of([(3, 0)], 0.0)], LETTERS)
    with pytest.raises(InputError, match="gold letter 'E'"):
        SharedPrefix(model, prompt_ids()).letter_probabilities([CLEAN], LETTERS, gold="E")
    with pytest.raises(InputError, match=r"shape \(1, T>=1\)"):
        SharedPrefix(model, torch.tensor([1, 2, 3]))


def _multipliers_one_by_one(edits, shape, device=None):
    """The per-neuron loop that `multipliers` replaced (kept here as its oracle)."""
    n_layers, width = shape
    out = {}
    for row, edit in enumerate(edits):
        if not edit.key():
            continue
        for layer, index in edit.neurons:
            if not (0 <= layer < n_layers and 0 <= index < width):
                raise InputError(f"neuron ({layer}, {index}) is outside the model's neuron grid "
                                 f"{n_layers} x {width}")
            matrix = out.get(layer)
            if matrix is None:
                matrix = out[layer] = torch.ones(len(edits), width, device=device)
            matrix[row, index] = edit.factor
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_multipliers_equal_the_per_neuron_loop(seed):

    rng = np.random.default_rng(seed)
    shape = (5, 17)
    edits = []
    for _ in range(int(rng.integers(1, 12))):
        kind = rng.integers(5)
        if kind == 0:
            edits.append(CLEAN)
            continue
        neurons = [(int(rng.integers(shape[0])), int(rng.integers(shape[1])))
                   for _ in range(int(rng.integers(0, 9)))]
        if neurons and kind == 1:
            neurons += neurons[: len(neurons) // 2 + 1]  # duplicate neurons
        factor = float(rng.choice([0.0, 2.0, 1.0, 0.5]))
        edits.append(Edit.of(neurons, factor))
    edits.insert(int(rng.integers(len(edits) + 1)), CLEAN)
    expected = _multipliers_one_by_one(edits, shape)
    result = multipliers(edits, shape, "cpu")
    assert sorted(result) == sorted(expected)
    for layer, matrix in expected.items():
        assert result[layer].dtype == matrix.dtype and result[layer].shape == matrix.shape
        assert torch.equal(result[layer], matrix)
    assert multipliers([CLEAN, Edit.of([(1, 2)], 1.0), Edit.of([], 0.0)], shape, "cpu") == {}


def test_vectorised_multipliers_name_the_first_neuron_outside_the_grid():

    edits = [CLEAN, Edit.of([(9, 9)], 1.0), Edit.of([(0, 1), (2, -1), (5, 0)], 0.0)]
    with pytest.raises(InputError, match=r"neuron \(2, -1\) is outside .* 5 x 17") as got:
        multipliers(edits, (5, 17), "cpu")
    with pytest.raises(InputError) as old:
        _multipliers_one_by_one(edits, (5, 17))
    assert str(got.value) == str(old.value)
