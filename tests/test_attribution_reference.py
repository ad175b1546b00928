"""The reference IG (the released algorithm) on every family in qrnca.models.layouts."""

import pytest
import torch

from qrnca.attribution import reference_ig
from qrnca.errors import InputError
from qrnca.models import layouts
from qrnca.models.tiny import build_model


ALL_FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt", "phi"]


def _model(arch, dtype=torch.float32):
    model = build_model(arch, vocab_size=40, layers=2, hidden=16, intermediate=24, heads=2)
    with torch.no_grad():  # larger weights than the 0.02 default so that gradients are not tiny
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.4)
    return model.to(dtype).requires_grad_(False)


@pytest.mark.parametrize("arch", ALL_FAMILIES)
def test_reference_runs_on_every_family(arch):
    model = _model(arch)
    ids = torch.tensor([[1, 5, 9, 12, 7, 20, 33]])
    result = reference_ig(model, ids, 6, steps=4)
    assert result.ig.shape == layouts.grid_shape(model) and result.ig.dtype == torch.float32
    assert torch.isfinite(result.ig).all() and result.ig.abs().max() > 0
    probs = torch.softmax(model(ids).logits[0, -1], -1)
    assert result.p0 == pytest.approx(float(probs[6]), rel=1e-5)
    with layouts.record_last_position(model) as recorded:
        model(ids)
    torch.testing.assert_close(result.activations[1], recorded[1][0])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_completeness_with_a_fine_grid(arch):
    """Σ_i IG(l, i) → P(h̄) − P(0) as m grows (the `paper` grid is a right Riemann sum)."""
    model = _model(arch, torch.float64)
    ids = torch.tensor([[1, 5, 9, 12, 7, 20, 33]])
    layer = 1
    result = reference_ig(model, ids, 6, steps=256, ig_grid="paper", layers=[layer])
    zero = layouts.multiply_edit({layer: torch.zeros(24, dtype=torch.float64)})
    with torch.no_grad(), layouts.edit_last_position(model, zero):
        p_zero = float(torch.softmax(model(ids).logits[0, -1], -1)[6])
    total = float(result.ig[layer].sum())
    assert total == pytest.approx(result.p0 - p_zero, rel=0.02, abs=1e-7)
    assert result.ig[0].abs().max() == 0  # layers not asked for are left at zero


def test_reference_checks_its_inputs():
    model = _model("llama")
    with pytest.raises(InputError, match="vocabulary"):
        reference_ig(model, torch.tensor([[1, 2, 3]]), 999, steps=2)
    with pytest.raises(InputError, match="steps"):
        reference_ig(model, torch.tensor([[1, 2, 3]]), 5, steps=0)
