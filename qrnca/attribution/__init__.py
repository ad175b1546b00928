"""Neuron attribution by integrated gradients (docs/method.md §3, §9) and the static baselines'
per-prompt quantities.

- `reference_ig`: the released code's algorithm (L × m full-sequence passes), the test oracle;
  works for every family registered in `qrnca.models.families`.
- `fast_ig`: the exact last-token "staircase" (one prefix pass, last-token rows only, one
  backward) for the families whose registry entry has a `fast` block.
- `logprob_increase`: Yu & Ananiadou's log-probability increase of every neuron.
- `attribute_dataset`: the resumable per-shard job writing the attribution records of
  docs/formats.md.
"""

from .common import CleanState, PromptAttribution, ig_alphas
from .fast import fast_ig, fast_ig_batch
from .job import attribute_dataset, attribute_query, shard_queries
from .lasttoken import UnsupportedModelError, fast_families, last_token_state, supports_fast
from .logprob import hooked_clean_state, logprob_increase
from .reference import reference_ig

__all__ = [
    "CleanState", "PromptAttribution", "ig_alphas", "fast_ig", "fast_ig_batch", "reference_ig", "fast_families",
    "UnsupportedModelError", "last_token_state", "supports_fast", "attribute_dataset",
    "attribute_query", "shard_queries", "hooked_clean_state", "logprob_increase",
]
