"""`k2 query`: latest trades, OHLCV bars, VWAP and trade counts from the gold table.

    k2 query latest --symbol BTC/USDT [--limit 20] [--exchange BINANCE]
    k2 query ohlcv  --symbol BTC/USDT --interval 1m|5m|15m|1h [--since T --until T | --date D]
    k2 query vwap   --symbol BTC/USDT [--since T --until T | --date D]
    k2 query counts [--date D | --since T --until T]

Times are ISO 8601, UTC unless they carry an offset. Without a range, a query covers the
newest data (ohlcv 1m: the last hour; 5m: 6 hours; 15m/1h: 24 hours; vwap: the last hour;
counts: 24 hours), anchored at the newest hour partition in gold, not at the wall clock.
Output is an aligned table; `--json` prints one JSON object (decimals as exact strings).
The catalog is --catalog-uri/--warehouse, else the local stack's stack.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from k2.gold_queries import GoldReader, QueryResult, TimeRange


class QueryError(RuntimeError):
    """A problem the user can fix (no catalog, no table, bad arguments)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("catalog and output")
    g.add_argument(
        "--catalog-uri", help="Iceberg catalog URI (http(s):// REST, sqlite:, jdbc:sqlite:)"
    )
    g.add_argument("--warehouse", help="warehouse location (with --catalog-uri)")
    g.add_argument(
        "--stack-dir", type=Path, help="local stack directory (default: <data dir>/stack)"
    )
    g.add_argument(
        "--table",
        default=None,
        help="table identifier (default: the GOLD spec's, market_data.gold_...)",
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument(
        "--stats",
        action="store_true",
        help="print scan statistics (files, partitions, ms) on stderr",
    )

    symbol = argparse.ArgumentParser(add_help=False)
    symbol.add_argument("--symbol", required=True, help="canonical BASE/QUOTE, e.g. BTC/USDT")
    symbol.add_argument("--exchange", help="only this exchange (BINANCE, KRAKEN)")

    time_range = argparse.ArgumentParser(add_help=False)
    t = time_range.add_argument_group("time range (UTC; default: the newest data)")
    t.add_argument("--since", help="inclusive start, ISO 8601 (e.g. 2025-06-02T13:00)")
    t.add_argument("--until", help="exclusive end (default: the end of the newest hour with data)")
    t.add_argument("--date", help="a whole UTC day, YYYY-MM-DD (instead of --since/--until)")

    sub = parser.add_subparsers(dest="query_command", metavar="QUERY", required=True)
    latest = sub.add_parser(
        "latest", parents=[common, symbol], help="the newest trades of a symbol"
    )
    latest.add_argument("--limit", type=int, default=20, help="how many trades (default 20)")
    latest.add_argument(
        "--lookback-hours",
        type=int,
        default=None,
        help="how far back to look at most (default 168)",
    )
    ohlcv = sub.add_parser(
        "ohlcv", parents=[common, symbol, time_range], help="OHLCV bars per exchange"
    )
    ohlcv.add_argument("--interval", required=True, choices=("1m", "5m", "15m", "1h"))
    sub.add_parser(
        "vwap",
        parents=[common, symbol, time_range],
        help="volume-weighted average price per exchange",
    )
    counts = sub.add_parser(
        "counts", parents=[common, time_range], help="trades per exchange per hour"
    )
    counts.add_argument("--exchange", help="only this exchange")


# ---------------------------------------------------------------- catalog


def catalog_endpoint(
    uri: str | None, warehouse: str | None, stack_dir: Path | None = None
) -> tuple[str, str]:
    """(uri, warehouse) from the flags, else from the local stack's stack.json."""
    if uri:
        if not warehouse:
            raise QueryError("--catalog-uri needs --warehouse too")
        return uri, warehouse
    from k2.paths import data_dir

    state = (stack_dir or data_dir() / "stack") / "stack.json"
    try:
        data = json.loads(state.read_text())
    except FileNotFoundError:
        raise QueryError(
            f"no catalog: pass --catalog-uri/--warehouse, or start the local stack (`k2 up` or "
            f"`k2 stack up --services catalog`); {state} does not exist"
        ) from None
    except ValueError as exc:
        raise QueryError(f"{state} is not valid JSON: {exc}") from None
    cat = data.get("catalog") if isinstance(data, dict) else None
    if not isinstance(cat, dict) or not cat.get("uri") or not cat.get("warehouse"):
        raise QueryError(
            f"the local stack ({state}) has no catalog running: `k2 stack up --services catalog`"
        )
    return str(cat["uri"]), str(cat["warehouse"])


def open_reader(uri: str, warehouse: str, identifier: str | None = None) -> GoldReader:
    """Catalog + gold table, loaded once; the reader keeps them for every later query."""
    from k2.catalog import load_catalog
    from k2.contracts.tables import GOLD
    from k2.gold_queries import GoldReader

    try:
        catalog = load_catalog(uri, warehouse)
        return GoldReader.load(catalog, identifier or GOLD.identifier)
    except (OSError, ConnectionError) as exc:
        raise QueryError(
            f"cannot reach the catalog at {uri} (is it running? `k2 stack status`): {exc}"
        ) from exc
    except Exception as exc:
        # requests' ConnectionError is not an OSError; neither is a REST error response.
        name = type(exc).__name__
        if "Connection" in name or "Timeout" in name:
            raise QueryError(
                f"cannot reach the catalog at {uri} (is it running? `k2 stack status`): {exc}"
            ) from exc
        raise


# ---------------------------------------------------------------- arguments


def time_range_from_args(
    args: argparse.Namespace, default_until: dt.datetime | None
) -> TimeRange | None:
    """--date, or --since/--until; None when none was given (the query picks its default)."""
    from k2.gold_queries import TimeRange, parse_time

    date, since, until = (
        getattr(args, "date", None),
        getattr(args, "since", None),
        getattr(args, "until", None),
    )
    if date:
        if since or until:
            raise QueryError("use either --date or --since/--until")
        try:
            return TimeRange.day(dt.date.fromisoformat(date))
        except ValueError:
            raise QueryError(f"--date must be YYYY-MM-DD, not {date!r}") from None
    if not since and not until:
        return None
    try:
        end = parse_time(until) if until else default_until
        if end is None:
            raise QueryError("--until is needed: gold has no data to anchor the range at")
        start = parse_time(since) if since else end - dt.timedelta(hours=1)
        return TimeRange(start, end)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def execute(reader: GoldReader, args: argparse.Namespace) -> QueryResult:
    from k2.gold_queries import DEFAULT_LOOKBACK_HOURS, normalize_exchange, normalize_symbol

    try:
        exchange = normalize_exchange(getattr(args, "exchange", None))
        symbol = normalize_symbol(args.symbol) if getattr(args, "symbol", None) else None
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    cmd = args.query_command
    if cmd == "latest":
        assert symbol is not None
        if args.limit <= 0:
            raise QueryError("--limit must be positive")
        lookback = args.lookback_hours or DEFAULT_LOOKBACK_HOURS
        return reader.latest(symbol, args.limit, exchange=exchange, lookback_hours=lookback)
    ext = reader.extent()
    tr = time_range_from_args(args, ext.end if ext else None)
    if cmd == "ohlcv":
        assert symbol is not None
        return reader.ohlcv(symbol, args.interval, tr, exchange=exchange)
    if cmd == "vwap":
        assert symbol is not None
        return reader.vwap(symbol, tr, exchange=exchange)
    if cmd == "counts":
        return reader.counts(tr, exchange=exchange)
    raise QueryError(f"unknown query {cmd!r}")


# ---------------------------------------------------------------- output


def render(result: QueryResult, as_json: bool) -> str:
    from k2.gold_queries import format_table

    if as_json:
        return json.dumps(result.to_json_dict(), indent=2)
    return format_table(result.columns, result.rows)


def _describe(result: QueryResult) -> str:
    s = result.stats
    parts = sorted(s.partitions)
    span = (
        f"{parts[0][0]}/{parts[0][1]:02d}..{parts[-1][0]}/{parts[-1][1]:02d}" if parts else "none"
    )
    return (
        f"{len(result.rows)} row(s) in {result.elapsed_ms:.0f} ms: {s.files} file(s), {len(parts)} hour partition(s) "
        f"[{span}], {s.rows_in_files} rows in files, {s.plans} plan(s) {s.plan_ms:.0f} ms, read {s.read_ms:.0f} ms"
        + (f", {s.fallback_files} via ArrowScan" if s.fallback_files else "")
    )


def run(args: argparse.Namespace) -> int:
    from k2.gold_queries import GoldTableMissing

    try:
        uri, warehouse = catalog_endpoint(args.catalog_uri, args.warehouse, args.stack_dir)
        reader = open_reader(uri, warehouse, args.table)
        result = execute(reader, args)
    except (QueryError, GoldTableMissing) as exc:
        print(f"k2 query: {exc}", file=sys.stderr)
        return 2
    print(render(result, args.json))
    if result.message and not args.json:
        print(f"k2 query: {result.message}", file=sys.stderr)
    if args.stats:
        print(f"k2 query: {_describe(result)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="k2 query", description=__doc__.splitlines()[0] if __doc__ else None
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = [
    "QueryError",
    "add_arguments",
    "catalog_endpoint",
    "execute",
    "open_reader",
    "render",
    "run",
]
