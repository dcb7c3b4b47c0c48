"""`k2 tables`: create/evolve, list and drop the medallion Iceberg tables.

    k2 tables apply [-f pipeline.yaml] [--table NAME]...      # prints each change, or "no changes"
    k2 tables list [--json]                                   # name, fields, partitioning, snapshots
    k2 tables drop (--all | NAME...) [--purge]                # --all --purge: the fresh start
    k2 tables compact [--grace MINUTES] [--dry-run] [--json] [--every SECONDS]
                                                              # gold: one file per exchange+symbol per closed hour

The catalog is `--catalog-uri`/`--warehouse` if given, else the local stack's (its
stack.json, as `k2 stack up` wrote it), else the pipeline declaration's (`-f`). With
`-f`, the namespace and the silver tables (one per feed) come from the declaration;
without it, all tables of k2.contracts.tables in their namespace. `drop` asks nothing:
`drop --all --purge` empties the namespace and deletes the tables' files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from k2.pipeline import CompactionSettings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from k2.contracts.tables import TableSpec
    from k2.pipeline import Pipeline


# the declaration's default (spec.compaction.graceMinutes)
DEFAULT_GRACE_MINUTES = CompactionSettings.grace_minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog-uri",
        help="Iceberg REST catalog URL, or sqlite:/jdbc:sqlite: for the embedded one",
    )
    common.add_argument("--warehouse", help="warehouse location (file:///..., s3://...)")
    common.add_argument(
        "--stack-dir",
        type=Path,
        default=None,
        help="local stack whose catalog to use when --catalog-uri is not given (default: <data dir>/stack)",
    )
    common.add_argument(
        "-f",
        "--file",
        type=Path,
        help="pipeline declaration (namespace, feeds, catalog)",
    )
    sub = parser.add_subparsers(dest="tables_command", metavar="ACTION", required=True)
    apply_p = sub.add_parser(
        "apply", parents=[common], help="create missing tables, evolve existing ones"
    )
    apply_p.add_argument(
        "--table", action="append", default=[], help="only this table (repeatable)"
    )
    apply_p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    list_p = sub.add_parser("list", parents=[common], help="tables of the namespace")
    list_p.add_argument("--json", action="store_true", help="machine-readable output")
    drop_p = sub.add_parser("drop", parents=[common], help="drop tables (no questions asked)")
    drop_p.add_argument("names", nargs="*", metavar="TABLE", help="tables to drop")
    drop_p.add_argument("--all", action="store_true", help="every table of the namespace")
    drop_p.add_argument("--purge", action="store_true", help="also delete data and metadata files")
    compact_p = sub.add_parser(
        "compact",
        parents=[common],
        help="rewrite gold's closed hours as one file per exchange and symbol (k2.gold_compaction)",
    )
    compact_p.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_MINUTES,
        metavar="MINUTES",
        help=f"leave hours that ended less than this long ago (default {DEFAULT_GRACE_MINUTES:g})",
    )
    compact_p.add_argument("--dry-run", action="store_true", help="list the hours, change nothing")
    compact_p.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep running: compact again every SECONDS until SIGTERM/SIGINT (k2 up, pods)",
    )
    compact_p.add_argument("--json", action="store_true", help="machine-readable output")


# ---------------------------------------------------------------- what and where


def table_specs(pipeline: Pipeline | None = None) -> list[TableSpec]:
    """The tables a pipeline needs (all medallion tables when None), in its namespace."""
    from k2.contracts import tables

    if pipeline is None:
        return list(tables.ALL_TABLES)
    exchanges = {f.exchange for f in pipeline.feeds}
    wanted = [
        tables.BRONZE,
        *(s for s in tables.SILVERS if s.properties.get("k2.exchange") in exchanges),
        tables.DLQ,
        tables.GOLD,
    ]
    return [dataclasses.replace(s, namespace=pipeline.namespace) for s in wanted]


class UsageError(Exception):
    pass


def resolve_catalog(args: argparse.Namespace, pipeline: Pipeline | None) -> tuple[str, str, str]:
    """(uri, warehouse, where from): flags, else the local stack, else the declaration."""
    if args.catalog_uri:
        if not args.warehouse and not args.catalog_uri.startswith(("http://", "https://")):
            raise UsageError("--warehouse is required with an embedded (SQL) catalog")
        return args.catalog_uri, args.warehouse or "", "--catalog-uri"
    from k2.stack.stack import Stack

    stack = Stack(args.stack_dir) if args.stack_dir else Stack()
    local = stack.endpoints().get("catalog")
    if local:
        return (
            str(local["uri"]),
            args.warehouse or str(local["warehouse"]),
            f"local stack {stack.state_file}",
        )
    if pipeline is not None:
        return (
            pipeline.catalog_uri,
            args.warehouse or pipeline.warehouse,
            f"declaration {args.file}",
        )
    raise UsageError(
        f"no catalog: pass --catalog-uri (and --warehouse), start the local stack (`k2 stack up`;"
        f" none in {stack.state_file}), or give a declaration with -f"
    )


def declared_io_properties(pipeline: Pipeline) -> dict[str, str]:
    """The object-store settings the declaration gives its jobs' Iceberg catalog through
    spec.spark.conf (`spark.sql.catalog.k2.s3.endpoint`, `...client.region`, what the chart
    sets for its MinIO), as pyiceberg catalog properties: a pyiceberg client of the same
    catalog that reads and writes the tables' files (compaction) needs the same endpoint."""
    from k2.catalog import DEFAULT_NAME  # the jobs' Spark catalog has the same name

    prefix = f"spark.sql.catalog.{DEFAULT_NAME}."
    return {
        key[len(prefix) :]: value
        for key, value in sorted(pipeline.spark.conf.items())
        if key.startswith(prefix) and key[len(prefix) :].startswith(("s3.", "client."))
    }


def open_catalog(args: argparse.Namespace, pipeline: Pipeline | None) -> Catalog:
    from k2.catalog import load_catalog

    uri, warehouse, source = resolve_catalog(args, pipeline)
    print(f"catalog {uri} ({source})", file=sys.stderr)
    # the declaration's own catalog: its object-store settings too
    properties = {}
    if pipeline is not None and uri == pipeline.catalog_uri:
        properties = declared_io_properties(pipeline)
    try:
        return load_catalog(uri, warehouse, **properties)
    except Exception as exc:  # connection refused, bad config: one clear line
        raise UsageError(f"cannot open the catalog at {uri}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- actions


def _apply(args: argparse.Namespace, catalog: Catalog, specs: list[TableSpec]) -> int:
    from k2 import iceberg_ddl as ddl

    if args.table:
        known = {s.name: s for s in specs}
        unknown = [t for t in args.table if t not in known]
        if unknown:
            raise UsageError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(known)}")
        specs = [known[t] for t in args.table]
    failed = 0
    changed = 0
    namespaces: set[str] = set()
    for spec in specs:
        try:
            changes = ddl.plan_in(catalog, spec)
        except ddl.PlanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if spec.namespace in namespaces:  # created earlier in this run (or a dry run)
            changes = [c for c in changes if not isinstance(c, ddl.CreateNamespace)]
        namespaces.add(spec.namespace)
        for change in changes:
            print(change.describe())
        if changes and not args.dry_run:
            ddl.apply(catalog, changes)
        changed += len(changes)
    if not changed and not failed:
        print("no changes")
    return 1 if failed else 0


def _namespace(specs: list[TableSpec]) -> str:
    return specs[0].namespace


def _list(args: argparse.Namespace, catalog: Catalog, specs: list[TableSpec]) -> int:
    from k2 import iceberg_ddl as ddl

    namespace = _namespace(specs)
    if not catalog.namespace_exists(namespace):
        if args.json:
            print("[]")
        else:
            print(f"namespace {namespace} does not exist (run `k2 tables apply`)")
        return 0
    statuses = [
        ddl.table_status(catalog.load_table(ident))
        for ident in sorted(catalog.list_tables(namespace))
    ]
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    if not statuses:
        print(f"namespace {namespace} has no tables")
        return 0
    rows = [("TABLE", "FIELDS", "PARTITIONING", "SNAPSHOTS")] + [
        (
            s["identifier"],
            str(s["fieldCount"]),
            ", ".join(s["partitioning"]) or "-",
            str(s["snapshotCount"]),
        )
        for s in statuses
    ]
    print(format_table(rows, right_aligned=frozenset({1, 3})))
    return 0


def format_table(rows: list[tuple[str, ...]], right_aligned: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right_aligned else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _drop(args: argparse.Namespace, catalog: Catalog, specs: list[TableSpec]) -> int:
    from k2 import iceberg_ddl as ddl

    namespace = _namespace(specs)
    if bool(args.all) == bool(args.names):
        raise UsageError("name the tables to drop, or pass --all (not both)")
    if args.all:
        if not catalog.namespace_exists(namespace):
            print(f"namespace {namespace} does not exist: nothing to drop")
            return 0
        idents = [".".join(i) for i in sorted(catalog.list_tables(namespace))]
    else:
        idents = [n if "." in n else f"{namespace}.{n}" for n in args.names]
    failed = 0
    for ident in idents:
        try:
            result = ddl.drop(catalog, ident, purge=args.purge)
        except Exception as exc:  # noqa: BLE001 - report each table, go on with the others
            print(f"error: dropping {ident}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if result.purged:
            extra = (
                f"; {result.files_left_by_catalog} file(s) the catalog left deleted"
                if result.files_left_by_catalog
                else ""
            )
            where = ", location removed" if result.location_removed else ""
            print(f"dropped {ident} (purged{where}{extra})")
        else:
            print(f"dropped {ident} (files kept at {result.location})")
    if not idents:
        print(f"namespace {namespace} has no tables")
    return 1 if failed else 0


def _compact(args: argparse.Namespace, catalog: Catalog, specs: list[TableSpec]) -> int:
    from k2.contracts.tables import GOLD

    ident = next(s.identifier for s in specs if s.name == GOLD.name)
    if args.grace < 0:
        raise UsageError("--grace must be >= 0 minutes")
    if args.every is None:
        if not catalog.table_exists(ident):
            raise UsageError(f"{ident} does not exist (run `k2 tables apply`)")
        _compact_once(args, catalog, ident)
        return 0
    if args.every <= 0:
        raise UsageError("--every must be > 0 seconds")
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"compacting {ident} every {args.every:g}s (grace {args.grace:g} min)", flush=True)
    while not stop.is_set():
        try:
            if catalog.table_exists(ident):
                _compact_once(args, catalog, ident)
        except Exception as exc:  # noqa: BLE001 - a bad round is reported; the next one retries
            print(f"error: compacting {ident}: {type(exc).__name__}: {exc}", flush=True)
        stop.wait(args.every)
    return 0


def _compact_once(args: argparse.Namespace, catalog: Catalog, ident: str) -> None:
    import datetime as dt

    from k2 import gold_compaction as gc

    table = catalog.load_table(ident)
    closed_before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=args.grace)
    todo = gc.hours_to_compact(gc.file_facts(table), closed_before)
    if args.dry_run:
        if args.json:
            print(json.dumps([str(h) for h in todo]))
        else:
            print(f"{ident}: {len(todo)} hour(s) to compact" + "".join(f"\n  {h}" for h in todo))
        return
    progress = None if args.json else (lambda m: print(m, flush=True))
    results = gc.compact(table, hours=todo, progress=progress)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2), flush=True)
    elif not results:
        if args.every is None:
            print(f"{ident}: every closed hour is already one file per exchange and symbol")
    else:
        rows = sum(r.rows for r in results)
        print(f"{ident}: compacted {len(results)} hour(s), {rows:,} rows", flush=True)


def run(args: argparse.Namespace) -> int:
    pipeline = None
    try:
        if args.file:
            from k2.pipeline import DeclarationError, load

            try:
                pipeline = load(args.file)
            except DeclarationError as exc:
                raise UsageError(str(exc)) from exc
        specs = table_specs(pipeline)
        catalog = open_catalog(args, pipeline)
        actions = {"apply": _apply, "list": _list, "drop": _drop, "compact": _compact}
        action = actions[args.tables_command]
        return action(args, catalog, specs)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k2 tables", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
