"""Every number the QRNCA paper reports, as plain data, so that tables and figures can show the
paper's value beside ours.

Source: Chen, Dejl & Toni, "Identifying Query-Relevant Neurons in Large Language Models for
Long-Form Texts", AAAI 2025 (arXiv 2406.10868), as transcribed in docs/method.md (§6-§8) of this
project. All numbers are for Llama-2-7B-chat (the paper's main model). Method keys are the
neurons-file method names (docs/formats.md); dataset keys are ``domain`` and ``language``; group
keys are the dataset ``group`` values (``biology`` ... ``computer_science``; ``ar`` ... ``zh``).

Nothing here is computed: where the paper gives only a bound or a qualitative statement, the
data says so (``upper_bound``, ``highest_pair``) instead of inventing a number.
"""

from __future__ import annotations

MODEL = "Llama-2-7B-chat"

DOMAINS = ("biology", "physics", "chemistry", "mathematics", "computer_science", "geography")
LANGUAGES = ("ar", "en", "fr", "ja", "ru", "zh")

#: Table 3: mean number of QR neurons per query, per group, and the reported overall mean
#: (the paper gives 12.9 for domains, which is the unweighted mean of the six domain means,
#: 12.88; it reports no overall value for languages, hence None).
TABLE3 = {
    "domain": {
        "groups": {
            "biology": 13.1,
            "physics": 13.3,
            "chemistry": 12.8,
            "mathematics": 11.1,
            "computer_science": 14.3,
            "geography": 12.7,
        },
        "overall": 12.9,
    },
    "language": {
        "groups": {"ar": 12.4, "en": 14.4, "fr": 12.7, "ja": 16.6, "ru": 15.8, "zh": 15.0},
        "overall": None,
    },
}

#: Table 4: probability change ratio (PCR, higher is better) for boosting / suppressing each
#: method's neurons, per dataset. ``logprob_increase`` was not in the paper.
TABLE4 = {
    "random": {"domain": {"boost": 1.0, "suppress": 0.55}, "language": {"boost": 2.0, "suppress": 1.0}},
    "activation": {"domain": {"boost": 1.0, "suppress": 1.0}, "language": {"boost": 1.1, "suppress": 1.1}},
    "knowledge_neuron": {
        "domain": {"boost": 1.0, "suppress": 1.0},
        "language": {"boost": 6.7, "suppress": 1.8},
    },
    "qrnca_no_ica": {"domain": {"boost": 2.5, "suppress": 1.1}, "language": {"boost": 6.5, "suppress": 2.2}},
    "qrnca_with_common": {
        "domain": {"boost": 2.8, "suppress": 1.8},
        "language": {"boost": 10.4, "suppress": 8.5},
    },
    "qrnca": {"domain": {"boost": 4.4, "suppress": 5.6}, "language": {"boost": 41.2, "suppress": 36.0}},
}

#: Table 6: knowledge editing, percentage of prompts whose predicted option flips when the
#: method's neurons are boosted / suppressed. Each cell is ``{"value", "upper_bound"}``: the paper
#: reports Random and Activation only as "<= 0.3" (%), which is an upper bound, not a value.
TABLE6 = {
    "qrnca": {
        "domain": {
            "boost": {"value": 12.6, "upper_bound": None},
            "suppress": {"value": 18.2, "upper_bound": None},
        },
        "language": {
            "boost": {"value": 16.6, "upper_bound": None},
            "suppress": {"value": 24.8, "upper_bound": None},
        },
    },
    "knowledge_neuron": {
        "domain": {
            "boost": {"value": 1.4, "upper_bound": None},
            "suppress": {"value": 3.8, "upper_bound": None},
        },
        "language": {
            "boost": {"value": 14.3, "upper_bound": None},
            "suppress": {"value": 16.0, "upper_bound": None},
        },
    },
    "random": {
        "domain": {
            "boost": {"value": None, "upper_bound": 0.3},
            "suppress": {"value": None, "upper_bound": 0.3},
        },
        "language": {
            "boost": {"value": None, "upper_bound": 0.3},
            "suppress": {"value": None, "upper_bound": 0.3},
        },
    },
    "activation": {
        "domain": {
            "boost": {"value": None, "upper_bound": 0.3},
            "suppress": {"value": None, "upper_bound": 0.3},
        },
        "language": {
            "boost": {"value": None, "upper_bound": 0.3},
            "suppress": {"value": None, "upper_bound": 0.3},
        },
    },
}
TABLE6_UNIT = "percent"

#: Table 7: neuron-based prediction accuracy vs the model's prompt-based accuracy on held-out
#: MMLU questions (Llama-2-7B), for the three domains the paper reports.
TABLE7 = {
    "biology": {"neuron_based": 0.96, "prompt_based": 0.96},
    "chemistry": {"neuron_based": 0.67, "prompt_based": 0.71},
    "geography": {"neuron_based": 0.89, "prompt_based": 0.89},
}

#: Fig. 2a: overlap of QR-neuron sets between groups (off-diagonal range and the highest pair).
FIG2A = {
    "domain": {"range": (0.35, 0.49), "highest_pair": ("biology", "geography")},
    "language": {"range": (0.02, 0.13), "highest_pair": ("zh", "ja")},
}

#: Fig. 2b: QR neurons per layer peak in the middle layers and near the top (of 32 layers).
FIG2B = {"n_layers": 32, "middle_peak_layers": (15, 18), "top_peak_layer": 30}

#: The paper's dataset sizes (queries; each query is rendered as 3 prompts, docs/method.md §2).
QUERIES = {"domain": 552, "language": 600}
PROMPTS_PER_QUERY = 3


def table3_paper(group: str) -> float | None:
    """The paper's Table 3 mean for a group name (domain or language), or None if it has none."""
    for dataset in TABLE3.values():
        if group in dataset["groups"]:
            return dataset["groups"][group]
    return None
