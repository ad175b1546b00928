"""Table 6: editing flip rates per dataset, method and operation, with the paper's rates."""

from qrnca.evaluation import read_results, table6
from qrnca.io import atomic_open
from qrnca.workflow import job

with job(snakemake) as log:
    results = read_results(
        list(snakemake.input), snakemake.params.datasets, snakemake.params.methods
    )
    table = table6(results)
    with atomic_open(snakemake.output[0]) as fh:
        table.to_csv(fh, index=False)
    log.info("\n%s", table.to_string(index=False))
