"""Table 4: PCR per dataset, method and operation, with the paper's values beside ours."""

from qrnca.datasets.queries import read_dataset
from qrnca.evaluation.records import read_results
from qrnca.io import atomic_open
from qrnca.outputs.evaluation_tables import table4
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    datasets = used["datasets[].name"]
    ids = {name: [q["id"] for q in read_dataset(path)]
           for name, path in zip(datasets, snakemake.input.datasets)}
    results = read_results(list(snakemake.input.evaluation), datasets, used["methods"], ids)
    table = table4(results, pcr_average=used["evaluation.pcr_average"])
    with atomic_open(snakemake.output[0]) as fh:
        table.to_csv(fh, index=False)
    log.info("\n%s", table.to_string(index=False))
