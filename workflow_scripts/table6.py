"""Table 6: editing flip rates per dataset, method and operation, with the paper's rates."""

from qrnca.evaluation import read_evaluation, table6
from qrnca.io import atomic_open
from qrnca.workflow import job

with job(snakemake) as log:
    methods, datasets = snakemake.params.methods, snakemake.params.datasets
    paths = iter(snakemake.input)
    results = {(d, m): read_evaluation(next(paths)) for d in datasets for m in methods}
    table = table6(results)
    with atomic_open(snakemake.output[0]) as fh:
        table.to_csv(fh, index=False)
    log.info("\n%s", table.to_string(index=False))
