"""The neuron methods, in table order, and how a method that does not apply is recorded.

`qrnca` and its two ablations come from the QRNCA selection (`qrnca.neurons.selection`); the baselines
(`qrnca.neurons.baselines`) are recomputed on CPU from the stored attribution records. A method can be
*not applicable* to a model (e.g. the log-probability increase when the final norm's statistics
cannot be frozen): the attribution records say why, the method's neurons file then holds one row
per query with the reason under `NOT_APPLICABLE` and no neurons, the evaluation skips it and the
tables show it as not applicable with the reason (docs/formats.md).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import InputError

#: QRNCA and its ablations (docs/method.md §4), in table order.
QRNCA_METHODS = ("qrnca", "qrnca_no_ica", "qrnca_with_common")
#: The baselines (docs/method.md §5), in table order.
BASELINE_METHODS = ("knowledge_neuron", "activation", "random", "logprob_increase")
#: Every neuron method, in the order of Tables 4 and 6.
METHODS = QRNCA_METHODS + BASELINE_METHODS

#: The key under which a record says that its method does not apply, and why.
NOT_APPLICABLE = "not_applicable"


def not_applicable(reason: str) -> dict:
    return {NOT_APPLICABLE: str(reason)}


def not_applicable_reason(rows: Sequence[Mapping], source: str = "records") -> str | None:
    """The reason when every row says its method does not apply; None when none says so. Rows
    that disagree (some applicable, some not, or different reasons) are an error naming `source`."""
    reasons = {row.get(NOT_APPLICABLE) for row in rows if isinstance(row, Mapping)}
    if not rows or reasons == {None}:
        return None
    if None in reasons or len(reasons) != 1:
        raise InputError(f"{source}: some records say the method does not apply and others do not "
                         f"({sorted(map(str, reasons))}); rebuild it")
    return reasons.pop()
