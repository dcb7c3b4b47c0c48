"""`k2 bench query`: gold query latency on a day of trades (10M rows; --quick 200k).

1. Catalog: the local stack's REST catalog if one is running; else one started for the
   benchmark through the stack API under <data dir>/bench/stack (and stopped again at
   the end; its SQLite catalog and warehouse stay, so the table is built once); else,
   if the REST catalog cannot start here (no Java / jars), the embedded SQL catalog
   under <data dir>/bench/sql (said in the result).
2. Table: `k2_bench_<rows>.gold_crypto_trades`, created from the GOLD spec (same columns,
   partitioning, sort order, properties) through k2.iceberg_ddl, filled by
   k2.gold_fixture (one commit per hour). Reused when its `k2.bench.fixture` property
   matches the requested size and seed; the build time is measured and stored with it.
3. Queries: each type `--query-runs` times (default 50) with random symbols and hours,
   in shuffled order, after one warm-up of each. The headline (`overall`, target p99
   < 500 ms) covers the four point queries (latest, ohlcv and vwap of a random symbol
   in a random hour, counts of a random hour); 6-hour and whole-day scans are reported
   beside it (`overall_with_wide`). Wall and CPU time are both recorded: on a shared
   machine, wall time mostly measures the neighbours. The catalog and table objects are
   loaded once and kept in process (GoldReader), as a query service would; the cost of
   reloading the metadata is measured separately (`metadata_refresh_ms`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from k2.gold_queries import GoldReader, QueryResult

BENCH_NAMESPACE = "k2_bench"
FIXTURE_PROPERTY = "k2.bench.fixture"
BUILD_SECONDS_PROPERTY = "k2.bench.build-seconds"
TARGET_P99_MS = 500.0
# The four `k2 query` queries with random symbols and hours: the headline p50/p99 (target 500 ms).
POINT_TYPES = ("latest", "ohlcv", "vwap", "counts")
# Wider windows (the CLI's defaults for 5m and 1h bars, a whole day of counts): reported apart.
WIDE_TYPES = ("ohlcv_5m_6h", "ohlcv_1h_day", "counts_day")
QUERY_TYPES = POINT_TYPES + WIDE_TYPES
DESCRIPTIONS = {
    "latest": "newest 20 trades of a random symbol (newest hour first, widening if short)",
    "ohlcv": "1m, 5m or 15m bars (random) of a random symbol over a random hour",
    "vwap": "VWAP of a random symbol over a random 15-120 minute window (minute-aligned)",
    "counts": "trades per exchange in a random hour",
    "ohlcv_5m_6h": "5m bars of a random symbol over a random 6-hour window (6 partitions)",
    "ohlcv_1h_day": "1h bars of a random symbol over the whole day (24 partitions, 10M rows)",
    "counts_day": "trades per exchange per hour over the whole day (24 partitions, 10M rows)",
}


LAYOUTS = ("compacted", "streamed")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--query-rows",
        type=int,
        default=None,
        help="trades in the table (default 10M, --quick 200k)",
    )
    group.add_argument(
        "--query-runs", type=int, default=None, help="runs per query type (default 50, --quick 20)"
    )
    group.add_argument("--query-seed", type=int, default=7, help="seed of the query mix")
    group.add_argument(
        "--query-catalog",
        choices=("auto", "rest", "sql"),
        default="auto",
        help="auto: running stack, else a REST catalog started for the run, else SQL",
    )
    group.add_argument(
        "--query-catalog-uri", help="use this catalog (with --query-warehouse) instead"
    )
    group.add_argument("--query-warehouse", help="warehouse of --query-catalog-uri")
    group.add_argument(
        "--query-files-per-hour", type=int, default=1, help="data files per hour partition"
    )
    group.add_argument(
        "--query-layout",
        choices=LAYOUTS,
        default="compacted",
        help="compacted: closed hours one file per exchange and symbol (`k2 tables compact`, as gold settles); "
        "streamed: the files as written, every symbol in each",
    )
    group.add_argument("--query-rebuild", action="store_true", help="rebuild the cached table")


def _progress(msg: str) -> None:
    print(f"k2 bench query: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- catalog


@contextlib.contextmanager
def bench_catalog(
    mode: str, uri: str | None = None, warehouse: str | None = None
) -> Iterator[tuple[Catalog, dict[str, Any]]]:
    from k2.catalog import load_catalog
    from k2.paths import data_dir

    if uri:
        if not warehouse:
            raise ValueError("--query-catalog-uri needs --query-warehouse")
        kind = "rest" if uri.startswith(("http://", "https://")) else "sql"
        yield (
            load_catalog(uri, warehouse),
            {"kind": kind, "source": "given", "uri": uri, "warehouse": warehouse},
        )
        return
    if mode in ("auto", "rest"):
        running = _running_stack_catalog()
        if running:
            _progress(f"using the running stack's catalog at {running['uri']}")
            yield (
                load_catalog(running["uri"], running["warehouse"]),
                {"kind": "rest", "source": "stack", **running},
            )
            return
        try:
            from k2.stack.stack import Stack

            stack = Stack(data_dir() / "bench" / "stack")
            was_running = bool(stack.status().get("catalog", {}).get("healthy"))
            _progress("starting a REST catalog for the benchmark (stack API)")
            started = time.perf_counter()
            endpoints = stack.up(["catalog"])["catalog"]
            start_s = time.perf_counter() - started
        except Exception as exc:  # no Java, jars not resolvable, port trouble...
            if mode == "rest":
                raise
            _progress(
                f"REST catalog unavailable ({type(exc).__name__}: {str(exc)[:200]}); using the SQL catalog"
            )
            fallback = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            try:
                info = {
                    "kind": "rest",
                    "source": "the bench stack"
                    + (" (already running)" if was_running else ", started for the run"),
                    "start_seconds": round(start_s, 1),
                }
                yield load_catalog(endpoints["uri"], endpoints["warehouse"]), {**info, **endpoints}
            finally:
                if not was_running:  # leave a catalog someone else started alone
                    stack.down(["catalog"])
            return
    else:
        fallback = "asked for (--query-catalog sql)"
    from k2.catalog import embedded_catalog

    root = data_dir() / "bench" / "sql"
    yield embedded_catalog(root), {"kind": "sql", "directory": str(root), "why": fallback}


def _running_stack_catalog() -> dict[str, str] | None:
    from k2.stack.base import http_ok
    from k2.stack.stack import Stack

    cat = Stack().endpoints().get("catalog") or {}
    uri, warehouse = cat.get("uri"), cat.get("warehouse")
    if uri and warehouse and http_ok(f"{uri}/v1/config"):
        return {"uri": str(uri), "warehouse": str(warehouse)}
    return None


# ---------------------------------------------------------------- table


def ensure_table(
    catalog: Catalog,
    rows: int,
    seed: int,
    files_per_hour: int,
    rebuild: bool,
    layout: str = "compacted",
) -> tuple[Table, dict[str, Any]]:
    """The bench gold table with `rows` trades (one UTC day), built unless cached."""
    from k2 import iceberg_ddl
    from k2.contracts.tables import GOLD
    from k2.gold_fixture import (
        FixtureParams,
        default_days,
        generate_hours,
        gold_arrow_schema,
        write_gold,
    )

    # One namespace per size, so `--quick` and the full run each keep their cached table.
    spec = dataclasses.replace(GOLD, namespace=f"{BENCH_NAMESPACE}_{rows}")
    params = FixtureParams(trades_per_day=rows, days=default_days(1), seed=seed)
    wanted = f"{params.describe()} files_per_hour={files_per_hour} layout={layout}"
    current = iceberg_ddl.load_current(catalog, spec.identifier)
    if current is not None and not rebuild and current.properties.get(FIXTURE_PROPERTY) == wanted:
        _progress(f"reusing {spec.identifier} ({wanted})")
        return current, {
            "reused": True,
            "seconds": float(current.properties.get(BUILD_SECONDS_PROPERTY, "nan")),
        }
    if current is not None:
        _progress(f"dropping the stale {spec.identifier}")
        iceberg_ddl.drop(catalog, spec.identifier, purge=True)
    iceberg_ddl.apply(catalog, iceberg_ddl.plan_in(catalog, spec))
    table = catalog.load_table(spec.identifier)
    _progress(f"building {spec.identifier}: {rows:,} trades over 24 hours")
    started = time.perf_counter()
    written = write_gold(
        table, generate_hours(gold_arrow_schema(table), params), files_per_hour=files_per_hour
    )
    seconds = time.perf_counter() - started
    _progress(f"written in {seconds:.1f}s ({written['rows'] / seconds:,.0f} rows/s)")
    table = catalog.load_table(spec.identifier)
    compaction: dict[str, Any] = {}
    if layout == "compacted":
        from k2 import gold_compaction

        _progress("compacting every hour (one file per exchange and symbol), as `k2 tables compact` does")
        t0 = time.perf_counter()
        done = gold_compaction.compact(
            table, grace=dt.timedelta(0), progress=lambda m: _progress(f"compact {m}")
        )
        c_seconds = time.perf_counter() - t0
        compaction = {
            "compaction_seconds": round(c_seconds, 1),
            "compaction_rows_per_s": round(sum(r.rows for r in done) / c_seconds),
            "compacted_hours": len(done),
        }
        table = catalog.load_table(spec.identifier)
    with table.transaction() as tx:
        tx.set_properties({FIXTURE_PROPERTY: wanted, BUILD_SECONDS_PROPERTY: f"{seconds:.1f}"})
    return catalog.load_table(spec.identifier), {
        "reused": False,
        "seconds": round(seconds, 1),
        **written,
        **compaction,
    }


def table_figures(table: Table) -> dict[str, Any]:
    files = list(table.scan().plan_files())
    return {
        "identifier": ".".join(table.name()),
        "rows": sum(f.file.record_count for f in files),
        "data_files": len(files),
        "bytes": sum(f.file.file_size_in_bytes for f in files),
        "snapshots": len(table.metadata.snapshots),
        "location": table.location(),
    }


# ---------------------------------------------------------------- queries


def query_mix(
    reader: GoldReader, runs: int, seed: int
) -> list[tuple[str, Callable[[], QueryResult]]]:
    """`runs` random instances of every query type, shuffled."""
    from k2.gold_fixture import MARKETS
    from k2.gold_queries import HOUR, TimeRange

    ext = reader.extent()
    if ext is None:
        raise RuntimeError("the bench table is empty")
    rng = random.Random(seed)  # noqa: S311 - a reproducible query mix, not secrets
    symbols = sorted({m.symbol for m in MARKETS})
    day = ext.oldest.date()
    day_start = dt.datetime.combine(day, dt.time(), dt.UTC)

    def hour(max_start: int = 23) -> dt.datetime:
        return day_start + rng.randint(0, max_start) * HOUR

    def make(kind: str) -> Callable[[], QueryResult]:
        sym = rng.choice(symbols)
        h = hour()
        if kind == "latest":
            return lambda: reader.latest(sym, 20)
        if kind == "ohlcv":
            interval = rng.choice(("1m", "5m", "15m"))
            return lambda: reader.ohlcv(sym, interval, TimeRange(h, h + HOUR))
        if kind == "vwap":
            start = hour(21) + dt.timedelta(minutes=rng.randint(0, 59))
            end = start + dt.timedelta(minutes=rng.randint(15, 120))
            return lambda: reader.vwap(sym, TimeRange(start, end))
        if kind == "counts":
            return lambda: reader.counts(TimeRange(h, h + HOUR))
        if kind == "ohlcv_5m_6h":
            h6 = hour(18)
            return lambda: reader.ohlcv(sym, "5m", TimeRange(h6, h6 + 6 * HOUR))
        if kind == "ohlcv_1h_day":
            return lambda: reader.ohlcv(sym, "1h", TimeRange.day(day))
        if kind == "counts_day":
            return lambda: reader.counts(TimeRange.day(day))
        raise ValueError(kind)

    mix = [(kind, make(kind)) for kind in QUERY_TYPES for _ in range(runs)]
    rng.shuffle(mix)
    return mix


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(sum(ms) / len(ms), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from k2.gold_queries import GoldReader

    quick = bool(getattr(args, "quick", False))
    rows = getattr(args, "query_rows", None) or (200_000 if quick else 10_000_000)
    runs = getattr(args, "query_runs", None) or (20 if quick else 50)
    seed = getattr(args, "query_seed", 7)
    files_per_hour = getattr(args, "query_files_per_hour", 1)
    load_before = os.getloadavg()
    mode = getattr(args, "query_catalog", "auto")
    uri, warehouse = (
        getattr(args, "query_catalog_uri", None),
        getattr(args, "query_warehouse", None),
    )
    with bench_catalog(mode, uri, warehouse) as (catalog, catalog_info):
        layout = getattr(args, "query_layout", "compacted")
        table, build = ensure_table(
            catalog, rows, seed, files_per_hour, getattr(args, "query_rebuild", False), layout
        )
        figures = table_figures(table)

        # Cold: what a one-shot `k2 query` pays before its first answer (catalog client already built).
        t0 = time.perf_counter()
        reader = GoldReader.load(catalog, figures["identifier"])
        load_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        first = reader.latest("BTC/USDT", 20)
        first_ms = (time.perf_counter() - t0) * 1000

        refresh: list[float] = []
        for _ in range(10):
            t0 = time.perf_counter()
            reader.refresh()
            refresh.append((time.perf_counter() - t0) * 1000)

        mix = query_mix(reader, runs, seed)
        for kind in QUERY_TYPES:  # one warm-up of each (not counted)
            next(fn for k, fn in mix if k == kind)()
        _progress(f"running {len(mix)} queries ({runs} per type)")
        by_type: dict[str, list[float]] = {k: [] for k in QUERY_TYPES}
        scanned: dict[str, list[int]] = {k: [] for k in QUERY_TYPES}
        files: dict[str, list[int]] = {k: [] for k in QUERY_TYPES}
        plan_ms: dict[str, list[float]] = {k: [] for k in QUERY_TYPES}
        cpu_ms: dict[str, list[float]] = {k: [] for k in QUERY_TYPES}
        read_ms: dict[str, list[float]] = {k: [] for k in QUERY_TYPES}
        from_metadata: dict[str, list[int]] = {k: [] for k in QUERY_TYPES}
        fallback = 0
        for kind, fn in mix:
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            by_type[kind].append((time.perf_counter() - t0) * 1000)
            cpu_ms[kind].append((time.process_time() - c0) * 1000)  # all threads of this process
            scanned[kind].append(result.stats.rows_in_files)
            files[kind].append(result.stats.files)
            plan_ms[kind].append(result.stats.plan_ms)
            read_ms[kind].append(result.stats.read_ms)
            from_metadata[kind].append(result.stats.metadata_files)
            fallback += result.stats.fallback_files
    queries = {
        k: {
            **summarize(v),
            "files_p50": sorted(files[k])[len(files[k]) // 2],
            "rows_in_files_p50": sorted(scanned[k])[len(scanned[k]) // 2],
            "metadata_only_files_p50": sorted(from_metadata[k])[len(from_metadata[k]) // 2],
            "cpu_ms_p50": round(percentile(cpu_ms[k], 50), 1),
            "cpu_ms_p99": round(percentile(cpu_ms[k], 99), 1),
            "plan_ms_p50": round(percentile(plan_ms[k], 50), 1),
            "read_ms_p50": round(percentile(read_ms[k], 50), 1),
        }
        for k, v in by_type.items()
    }

    def overall_of(kinds: tuple[str, ...]) -> dict[str, Any]:
        summary = summarize([v for k in kinds for v in by_type[k]])
        cpu = [v for k in kinds for v in cpu_ms[k]]
        return {
            **summary,
            "cpu_ms_p50": round(percentile(cpu, 50), 1),
            "cpu_ms_p99": round(percentile(cpu, 99), 1),
        }

    overall = overall_of(POINT_TYPES)
    return {
        "rows": figures["rows"],
        "layout": layout,
        "table": figures,
        "catalog": catalog_info,
        "build": build,
        "runs_per_type": runs,
        "query_types": DESCRIPTIONS,
        "cpu_note": "cpu_ms = process CPU time (DuckDB's 2 threads included) per query: what a query costs "
        "regardless of how busy the shared machine is; wall time also depends on the load average",
        "caching": "catalog client and table metadata loaded once per process and reused (GoldReader); "
        "manifest lists and manifests (immutable) read once; the data extent cached per snapshot id; "
        "no query results and no data-file contents are cached",
        "cold": {
            "table_load_ms": round(load_ms, 1),
            "first_query_ms": round(first_ms, 1),
            "first_rows": len(first.rows),
        },
        "metadata_refresh_ms": summarize(refresh),
        "queries": queries,
        "overall": overall,
        "overall_note": "overall = the four point query types (random symbol, random hour); "
        "overall_with_wide adds the 6-hour and whole-day scans",
        "overall_with_wide": overall_of(QUERY_TYPES),
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": overall["p99_ms"] < TARGET_P99_MS,
        "meets_target_with_wide": overall_of(QUERY_TYPES)["p99_ms"] < TARGET_P99_MS,
        "fallback_files": fallback,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }
