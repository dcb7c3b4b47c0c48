"""`k2 job {bronze|silver|gold|all} -f pipeline.yaml [overrides]`: run one streaming job in
this process (a local Spark driver, or the driver spark-submit started); `all` runs the three
in one driver (what `k2 up` does on one machine).

    k2 job bronze -f examples/pipeline.yaml --bootstrap-servers 127.0.0.1:9092 \\
        --catalog-uri http://127.0.0.1:8181 --warehouse file:///tmp/wh --checkpoint-location /tmp/ck
    k2 job silver -f pipeline.yaml --available-now     # catch up, then exit
"""

from __future__ import annotations

import argparse
import importlib

from k2.pipeline import LAYERS
from k2_jobs.common import (
    add_job_arguments,
    options_from_args,
    pipeline_from_args,
    run_job,
    run_jobs,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "layer", choices=(*LAYERS, "all"), help="which job (all: the three, one driver)"
    )
    add_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    pipeline, options = pipeline_from_args(args), options_from_args(args)
    if args.layer == "all":
        starts = {layer: importlib.import_module(f"k2_jobs.{layer}").start for layer in LAYERS}
        return run_jobs(starts, pipeline, options)
    module = importlib.import_module(f"k2_jobs.{args.layer}")
    return run_job(args.layer, module.start, pipeline, options)
