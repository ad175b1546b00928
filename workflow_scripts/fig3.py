"""Figures 3 / 4: related vs unrelated change per group for one operation on QRNCA neurons."""

from qrnca.evaluation import pcr_summary, read_evaluation
from qrnca.evaluation_plots import save_group_changes
from qrnca.workflow import job

with job(snakemake):
    records = read_evaluation(snakemake.input[0])
    by_group = pcr_summary(records, snakemake.params.settings["pcr_average"], by=("group",))
    op, dataset = snakemake.wildcards.op, snakemake.wildcards.dataset
    save_group_changes(
        by_group,
        op,
        [snakemake.output.pdf, snakemake.output.png],
        title=f"{snakemake.wildcards.model} / {dataset}: {op}ing QRNCA neurons",
    )
