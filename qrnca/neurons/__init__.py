"""Neurons: the method registry, QRNCA selection, the baselines, and the vocabulary
projection of selected neurons (Table 5)."""
