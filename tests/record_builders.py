"""Builders of attribution records (docs/formats.md "Attribution") for selection/baseline tests."""


def prompt(ig_max, scores):
    """One prompt's sparse IG record from {(layer, index): score}."""
    return {
        "p0": 0.5,
        "ig_max": ig_max,
        "n_neurons": 20,
        "neurons": [list(n) for n in scores],
        "ig": list(scores.values()),
    }
