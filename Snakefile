# Reproduction of Chen, Dejl & Toni (AAAI 2025), "Identifying Query-Relevant Neurons in Large
# Language Models for Long-Form Texts" (QRNCA), with the log-probability increase baseline of
# Yu & Ananiadou (EMNLP 2024). See README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema/config.schema.yaml")


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/models.smk"
include: "rules/attribution.smk"
include: "rules/neurons.smk"
include: "rules/evaluation.smk"
include: "rules/analysis.smk"


rule all:
    default_target: True
    input:
        all_targets(),
