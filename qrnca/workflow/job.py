"""The little every workflow script shares: logging into the rule's log file, thread limits,
and the provenance record written when the job succeeds.

A script is then only:

    with job(snakemake) as log:
        used = snakemake.params.used                                 # what its results depend on
        device = execution_setting(snakemake, "attribution.device")  # how it runs
        ...call the library...
        log.extra["model"] = ...   # anything provenance should hold beyond inputs and params

Params carry exactly the config values a rule's results depend on (`qrnca.workflow.config_usage`), so
Snakemake reruns a job when one of them changes. Execution settings (devices, batch and chunk
sizes) are read from the config with `execution_setting`, so changing them reruns nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field


def execution_setting(snakemake, key: str, *, dataset: str | None = None):
    """An execution setting (`qrnca.workflow.config_usage.EXECUTION_KEYS`) of this job, from the config;
    a `datasets[].x` key is that of `dataset`, by default the job's dataset wildcard."""
    from .config_usage import execution_value

    wildcards = getattr(snakemake, "wildcards", None)
    get = getattr(wildcards, "get", None)
    return execution_value(snakemake.config, key,
                           model=get("model") if get else None,
                           dataset=dataset or (get("dataset") if get else None))


@dataclass
class JobContext:
    logger: logging.Logger
    extra: dict = field(default_factory=dict)

    def info(self, msg, *args):
        self.logger.info(msg, *args)


def limit_threads(threads: int) -> None:
    """Limit torch's intra-op threads to `threads`: through `torch.set_num_threads` when the
    script has imported torch (every script that runs a model imports it at the top), else through
    `OMP_NUM_THREADS`, which torch reads if it is imported later. Torch is never imported here:
    a table or figure job does not need it, and importing it costs seconds."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


@contextlib.contextmanager
def job(snakemake):
    """Send stderr (tracebacks, tqdm progress) and logging to the rule's log, limit torch to the
    job's threads (`limit_threads`), and write provenance records for every output once the body succeeds."""
    started = time.time()
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stream = open(log_path, "w", buffering=1, encoding="utf-8") if log_path else sys.stderr
    old_stderr = sys.stderr
    sys.stderr = stream
    logger = logging.getLogger(f"qrnca.{snakemake.rule}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("qrnca")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    limit_threads(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    ctx = JobContext(logger)
    try:
        yield ctx
        from .provenance import record_job

        record_job(snakemake, extra=ctx.extra, started=started)
        logger.info("done in %.1f s", time.time() - started)
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        root.removeHandler(handler)
        sys.stderr = old_stderr
        if stream is not old_stderr:
            stream.close()
