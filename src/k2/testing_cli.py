"""`k2 test`: what CI runs. Prepares every real service the tests start (cached
downloads and builds, progress on stderr), runs ruff and mypy, then pytest.

The `live` (internet) and `kind` (Docker + kind) markers stay skipped unless asked
for; everything else runs against real Kafka, Apicurio, the Iceberg REST catalog,
local Spark and a real kube-apiserver.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

from k2.paths import REPO_ROOT

LINT_PATHS = ["src", "ingestors", "jobs", "operator", "tests"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-prepare", action="store_true", help="skip fetching/building services")
    parser.add_argument("--no-lint", action="store_true", help="skip ruff and mypy")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments (after --)")


def prepare_all() -> None:
    """Fetch every JVM artifact set and build the Go binaries at the same time: one is
    network-bound, the other CPU-bound."""
    from k2.stack import jvm, tools

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(jvm.ARTIFACT_SETS) + 1) as pool:
        futures: list[Future[object]] = [
            pool.submit(jvm.resolve, name) for name in jvm.ARTIFACT_SETS
        ]
        futures.append(pool.submit(tools.ensure))
        for f in futures:
            f.result()
    print(f"k2 test: services prepared in {time.monotonic() - started:.0f}s", file=sys.stderr)


def _step(name: str, argv: list[str]) -> int:
    print(f"k2 test: {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
    return subprocess.call(argv, cwd=REPO_ROOT)


def run(args: argparse.Namespace) -> int:
    if not args.no_prepare:
        prepare_all()
    py = sys.executable
    if not args.no_lint:
        if _step("ruff", [py, "-m", "ruff", "check", *LINT_PATHS]) != 0:
            return 1
        if _step("mypy", [py, "-m", "mypy"]) != 0:
            return 1
    extra = [a for a in args.pytest_args if a != "--"]
    return _step("pytest", [py, "-m", "pytest", *extra])
