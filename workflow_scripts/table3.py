"""Table 3: mean QR neurons per query per group (all datasets of one model), paper beside ours."""

import pandas as pd

from qrnca.analysis import table3
from qrnca.io import atomic_open, read_jsonl
from qrnca.workflow import job

with job(snakemake) as log:
    frames = []
    for dataset, path in zip(snakemake.params.datasets, snakemake.input):
        frame = table3(read_jsonl(path))
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    with atomic_open(snakemake.output[0]) as fh:
        table.to_csv(fh, index=False)
    log.info("\n%s", table.to_string(index=False))
