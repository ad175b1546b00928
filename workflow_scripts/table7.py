"""Table 7: neuron-based vs prompt-based accuracy per domain, with the paper's values."""

import pandas as pd

from qrnca.io import read_jsonl, write_csv
from qrnca.outputs.prediction_table import table7
from qrnca.workflow.job import job

with job(snakemake) as log:
    used = snakemake.params.used
    mmlu = [name for name, source in zip(used["datasets[].name"], used["datasets[].source"])
            if source == "mmlu"]
    tables = [
        table7(read_jsonl(path), dataset=dataset)
        for dataset, path in zip(mmlu, snakemake.input.predictions)
    ]
    table = pd.concat(tables, ignore_index=True)
    write_csv(snakemake.output[0], table)
    log.info("\n%s", table.to_string(index=False))
