"""Table 4: PCR per dataset, method and operation, with the paper's values beside ours."""

from qrnca.evaluation import read_results, table4
from qrnca.io import atomic_open
from qrnca.workflow import job

with job(snakemake) as log:
    results = read_results(
        list(snakemake.input), snakemake.params.datasets, snakemake.params.methods
    )
    table = table4(results, pcr_average=snakemake.params.settings["pcr_average"])
    with atomic_open(snakemake.output[0]) as fh:
        table.to_csv(fh, index=False)
    log.info("\n%s", table.to_string(index=False))
