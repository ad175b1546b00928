"""Table 4: PCR per dataset, method and operation, with the paper's values beside ours."""

from qrnca.evaluation.records import read_checked_results
from qrnca.io import write_csv
from qrnca.outputs.evaluation_tables import table4
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    results = read_checked_results(snakemake.input.evaluation, snakemake.input.datasets,
                                   used["datasets[].name"], used["methods"])
    table = table4(results, pcr_average=used["evaluation.pcr_average"])
    write_csv(snakemake.output[0], table)
    log.info("\n%s", table.to_string(index=False))
