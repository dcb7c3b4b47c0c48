"""`k2 job {bronze|silver|gold} -f pipeline.yaml [overrides]`: run one streaming job in this
process (a local Spark driver, or the driver spark-submit started).

    k2 job bronze -f examples/pipeline.yaml --bootstrap-servers 127.0.0.1:9092 \\
        --catalog-uri http://127.0.0.1:8181 --warehouse file:///tmp/wh --checkpoint-location /tmp/ck
    k2 job silver -f pipeline.yaml --available-now     # catch up, then exit
"""

from __future__ import annotations

import argparse
import importlib

from k2_jobs.common import (
    LAYERS,
    add_job_arguments,
    options_from_args,
    pipeline_from_args,
    run_job,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("layer", choices=LAYERS, help="which job")
    add_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"k2_jobs.{args.layer}")
    return run_job(args.layer, module.start, pipeline_from_args(args), options_from_args(args))
