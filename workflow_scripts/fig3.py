"""Figures 3 / 4: related vs unrelated change per group for one operation on QRNCA neurons."""

from qrnca.datasets.queries import read_dataset
from qrnca.evaluation.records import read_evaluation
from qrnca.outputs.evaluation_plots import save_group_changes
from qrnca.outputs.evaluation_tables import pcr_summary
from qrnca.workflow.job import job

with job(snakemake):
    used = snakemake.params.used
    ids = [q["id"] for q in read_dataset(snakemake.input.dataset)]
    records = read_evaluation(snakemake.input.evaluation, ids)
    by_group = pcr_summary(records, used["evaluation.pcr_average"], by=("group",))
    op, dataset = snakemake.wildcards.op, snakemake.wildcards.dataset
    save_group_changes(
        by_group,
        op,
        [snakemake.output.pdf, snakemake.output.png],
        title=f"{snakemake.wildcards.model} / {dataset}: {op}ing QRNCA neurons",
        dpi=used["analysis.figure_dpi"],
    )
