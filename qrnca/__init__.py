"""qrnca: query-relevant neurons of large language models.

A library reproducing Chen, Dejl & Toni (AAAI 2025, "QRNCA") with the log-probability increase
baseline of Yu & Ananiadou (EMNLP 2024). The Snakemake workflow in this repository is a thin
layer over it; every algorithm lives here and is unit-tested without Snakemake.
"""

__version__ = "0.1.0"
