import pytest
import torch

from qrnca.errors import UnknownLayoutError
from qrnca.evaluation.interventions import Edit, multipliers
from qrnca.models import layouts
from qrnca.models.tiny import build_model

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt", "phi"]


@pytest.mark.parametrize("arch", FAMILIES)
def test_grid_shape_and_weight_columns(arch):
    model = build_model(arch, vocab_size=40, layers=3, hidden=16, intermediate=24, heads=2)
    assert layouts.grid_shape(model) == (3, 24)
    assert layouts.down_proj_weight(model, 1).shape == (16, 24)


@pytest.mark.parametrize("arch", FAMILIES)
def test_last_position_edit_matches_manual_zeroing(arch):
    """Zeroing a neuron with the hook equals a forward with that neuron's input zeroed by hand,
    and earlier positions are untouched."""
    model = build_model(arch, vocab_size=40, layers=2, hidden=16, intermediate=24, heads=2)
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    clean = model(ids).logits
    with layouts.record_last_position(model) as recorded:
        model(ids)
    assert set(recorded) == {0, 1} and recorded[0].shape == (1, 24)

    mult = multipliers([Edit.of([(0, 3), (1, 5)], 0.0)], (2, 24), "cpu")
    with layouts.edit_last_position(model, layouts.multiply_edit(mult)):
        edited = model(ids).logits
    # Same computation by a hand-written pre-hook that zeroes the inputs in place.
    projections = layouts.down_projections(model)

    def zero(index):
        def hook(module, args):
            x = args[0].clone()
            x.view(1, -1, x.shape[-1])[:, -1, index] = 0
            return (x,)
        return hook

    handles = [projections[0].register_forward_pre_hook(zero(3)),
               projections[1].register_forward_pre_hook(zero(5))]
    manual = model(ids).logits
    for h in handles:
        h.remove()
    torch.testing.assert_close(edited, manual, rtol=0, atol=0)
    torch.testing.assert_close(edited[:, :-1], clean[:, :-1], rtol=0, atol=0)


def test_identity_boost_changes_nothing():
    model = build_model("llama", vocab_size=40, layers=2, hidden=16, intermediate=24, heads=2)
    ids = torch.tensor([[1, 5, 7, 9]])
    clean = model(ids).logits
    mult = multipliers([Edit.of([(0, 1), (1, 2)], 1.0)], (2, 24), "cpu")
    with layouts.edit_last_position(model, layouts.multiply_edit(mult)):
        same = model(ids).logits
    torch.testing.assert_close(same, clean, rtol=0, atol=0)


def test_unknown_layout_names_class():
    class Config:
        model_type = "mystery"

    class MysteryForCausalLM(torch.nn.Module):
        config = Config()

    with pytest.raises(UnknownLayoutError, match="MysteryForCausalLM.*mystery.*register"):
        layouts.decoder_layers(MysteryForCausalLM())
