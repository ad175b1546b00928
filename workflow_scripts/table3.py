"""Table 3: mean QR neurons per query per group (all datasets of one model), paper beside ours."""

import pandas as pd

from qrnca.consistency import check_records
from qrnca.datasets.queries import read_dataset
from qrnca.io import read_jsonl, write_csv
from qrnca.outputs.analysis import table3
from qrnca.workflow.job import job

with job(snakemake) as log:
    frames = []
    inputs = zip(snakemake.params.used["datasets[].name"], snakemake.input.qrnca,
                 snakemake.input.datasets)
    for dataset, path, dataset_path in inputs:
        rows = read_jsonl(path)
        check_records(rows, read_dataset(dataset_path), path, what="QRNCA neurons")
        frame = table3(rows)
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    write_csv(snakemake.output[0], table)
    log.info("\n%s", table.to_string(index=False))
