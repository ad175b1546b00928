"""Write the demo's synthetic world in the raw MMLU CSV and mLAMA JSONL formats."""

from pathlib import Path

from qrnca.demo.world import write_demo_world
from qrnca.workflow.job import job

with job(snakemake) as log:
    root = Path(snakemake.output.mmlu).parent
    seed = snakemake.params.used["demo_world.seed"]
    written = write_demo_world(root, seed=0 if seed is None else seed)
    log.info("wrote %d files under %s", len(written), root)
