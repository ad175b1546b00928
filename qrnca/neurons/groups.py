"""Neurons files grouped: a row's neurons and group, checked, and the union of a group's
neurons (docs/formats.md "Neurons"). Shared by the tables and figures of selected neurons
(`qrnca.outputs.analysis`) and the neuron-based prediction (`qrnca.evaluation.prediction`).

Group order is the caller's (the config's) order; when none is given it is the order in which
groups first appear in the rows, so outputs are stable.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import InputError
from .selection import Neuron


def row_neurons(row: Mapping, pos: int, n_layers: int | None = None) -> list[Neuron]:
    """A row's neurons as (layer, index) pairs, checked (`pos` names the row in errors)."""
    neurons = row.get("neurons") if isinstance(row, Mapping) else None
    if not isinstance(neurons, list):
        raise InputError(
            f"neurons row {pos} ({row.get('id') if isinstance(row, Mapping) else row!r}): 'neurons' must be a list"
        )
    out = []
    for n in neurons:
        if not (
            isinstance(n, (list, tuple)) and len(n) == 2 and all(isinstance(x, int) and x >= 0 for x in n)
        ):
            raise InputError(
                f"neurons row {pos} ({row.get('id')!r}): bad neuron {n!r}, expected [layer, index]"
            )
        if n_layers is not None and n[0] >= n_layers:
            raise InputError(f"neurons row {pos} ({row.get('id')!r}): layer {n[0]} >= n_layers {n_layers}")
        out.append((int(n[0]), int(n[1])))
    return out


def row_group(row: Mapping, pos: int) -> str:
    """A row's group, a non-empty string."""
    group = row.get("group") if isinstance(row, Mapping) else None
    if not isinstance(group, str) or not group:
        raise InputError(f"row {pos}: 'group' must be a non-empty string, got {group!r}")
    return group


def ordered_groups(rows: Sequence[Mapping], groups_order: Sequence[str] | None) -> list[str]:
    """`groups_order` (checked to hold every group of the rows), else first-seen order."""
    seen = list(dict.fromkeys(row_group(r, k) for k, r in enumerate(rows)))
    if groups_order is None:
        return seen
    order = list(groups_order)
    if len(set(order)) != len(order):
        raise InputError(f"groups_order has duplicates: {order}")
    unknown = [g for g in seen if g not in order]
    if unknown:
        raise InputError(f"groups {unknown} occur in the rows but not in groups_order {order}")
    return order


def group_neuron_sets(
    rows: Sequence[Mapping], groups_order: Sequence[str] | None = None
) -> dict[str, set[Neuron]]:
    """Per group, the set union of its queries' neurons (groups without rows get an empty set)."""
    groups = ordered_groups(rows, groups_order)
    sets: dict[str, set[Neuron]] = {g: set() for g in groups}
    for pos, row in enumerate(rows):
        sets[row_group(row, pos)].update(row_neurons(row, pos))
    return sets
