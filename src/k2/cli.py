"""The `k2` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules import their heavy dependencies (Spark, Kafka) inside
`run`, so `k2 --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Order is the order of `k2 --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("k2.up", "run the whole pipeline on this machine (no Kubernetes)"),
    "stack": ("k2.stack.cli", "start/stop the local services (Kafka, registry, catalog, kube)"),
    "tables": ("k2.tables_cli", "create/evolve/list/drop the medallion Iceberg tables"),
    "ingest": ("k2_ingestors.cli", "stream trades from an exchange into Kafka"),
    "replay-server": ("k2_ingestors.replay.cli", "serve recorded or synthetic exchange traffic"),
    "job": ("k2_jobs.cli", "run one Spark streaming job (bronze, silver, gold)"),
    "operator": ("k2_operator.cli", "run the Kubernetes operator"),
    "query": ("k2.query", "query the gold table"),
    "bench": ("k2.bench.cli", "run benchmarks and write JSON"),
    "test": ("k2.testing_cli", "run the test suite (what CI runs)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, import just that subcommand's module (a broken
    or heavy module elsewhere must not break or slow `k2 <this>`)."""
    parser = argparse.ArgumentParser(prog="k2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if only is not None:
                raise
            sub.add_parser(name, help=f"{help_text} (unavailable: {exc})")
            continue
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
