"""Queries on the gold table: pure planning, then pyiceberg + DuckDB execution.

Planning is pure and tested on its own: a half-open UTC time range becomes an
Iceberg row filter on the identity partition columns (exchange_date,
exchange_hour) so that pyiceberg prunes manifests and data files before anything
is read, AND-ed with the exact timestamp range and the pushed-down symbol (and
exchange) predicate. Column names come from the GOLD `TableSpec`; a name this
module uses that the contract does not declare fails at import.

Execution (`GoldReader`):

1. `table.scan(row_filter).plan_files()` -> the data files of the right hours only;
2. DuckDB reads exactly those parquet files (projection and filter pushed into
   the parquet reader) and aggregates them. Files with delete files, files not on
   the local filesystem, or a table whose schema history renamed a column we read
   take the safe path instead: pyiceberg's ArrowScan (applies deletes, maps by
   field id) into Arrow, then the same SQL over that.

Latency: `GoldReader` keeps the loaded `Table` (metadata) in process and only
reloads it on `refresh()` (one catalog round trip). Planning runs pyiceberg's own
planner (`ManifestGroupPlanner`, exactly what `scan.plan_files()` runs) over
manifest lists and manifests read once per process, both being immutable files;
the data extent (oldest/newest hour partition) is cached per snapshot id. Nothing
derived from data files is cached. `latest` reads the newest hour partition first
and widens backwards (1, 1, 2, 4, ... hours) only while it has fewer than `limit`
trades.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import TYPE_CHECKING, Any, cast

from pyiceberg import expressions as ex
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, Or
from pyiceberg.expressions.literals import literal

from k2.contracts.tables import GOLD
from k2.contracts.trade import SCALE

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from pyiceberg.table import FileScanTask, Table

# pyiceberg's predicates are pydantic models: mypy sees the synthesized field-based __init__
# (term=, value=) instead of the declared (term, literal) one, so they are built untyped here.
EqualTo: Any = ex.EqualTo
GreaterThanOrEqual: Any = ex.GreaterThanOrEqual
LessThan: Any = ex.LessThan
LessThanOrEqual: Any = ex.LessThanOrEqual
In: Any = ex.In

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

_GOLD_COLUMNS = frozenset(GOLD.column_names())


def _col(name: str) -> str:
    if name not in _GOLD_COLUMNS:
        raise KeyError(f"gold has no column {name!r}; the contract is k2.contracts.tables.GOLD")
    return name


def _partition_columns() -> tuple[str, str]:
    parts = [(p.source, p.transform) for p in GOLD.partition_by]
    if len(parts) != 2 or any(t != "identity" for _, t in parts):
        raise ValueError(
            f"gold partitioning changed ({parts}); gold_queries plans identity(date), identity(hour)"
        )
    return parts[0][0], parts[1][0]


DATE_COL, HOUR_COL = _partition_columns()
TS_COL, TRADE_ID_COL = (s.source for s in GOLD.sort_by)
SYMBOL_COL = _col("symbol")
EXCHANGE_COL = _col("exchange")
PRICE_COL = _col("price")
QTY_COL = _col("quantity")
SIDE_COL = _col("side")

INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
# Default window (hours, ending at the newest data) when no range is given.
DEFAULT_WINDOW_HOURS: dict[str, int] = {
    "1m": 1,
    "5m": 6,
    "15m": 24,
    "1h": 24,
    "vwap": 1,
    "counts": 24,
}
DEFAULT_LOOKBACK_HOURS = 24 * 7
_PRICE_QUANTUM = Decimal(1).scaleb(-SCALE)


class GoldTableMissing(LookupError):
    """The gold table (or its namespace) does not exist in the catalog."""


# ---------------------------------------------------------------------------
# Pure planning
# ---------------------------------------------------------------------------


def to_utc(value: dt.datetime) -> dt.datetime:
    """Aware datetimes are converted; naive ones are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def floor_hour(value: dt.datetime) -> dt.datetime:
    return to_utc(value).replace(minute=0, second=0, microsecond=0)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 date or date-time; naive means UTC; 'Z' accepted."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return to_utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time: {text!r} (e.g. 2025-06-02T13:00 or 2025-06-02T13:00:00Z)"
        ) from None


@dataclass(frozen=True)
class TimeRange:
    """Half-open [since, until) in UTC."""

    since: dt.datetime
    until: dt.datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", to_utc(self.since))
        object.__setattr__(self, "until", to_utc(self.until))
        if self.since >= self.until:
            raise ValueError(
                f"empty time range: since {self.since.isoformat()} >= until {self.until.isoformat()}"
            )

    @classmethod
    def day(cls, day: dt.date) -> TimeRange:
        start = dt.datetime.combine(day, dt.time(), UTC)
        return cls(start, start + dt.timedelta(days=1))

    @classmethod
    def hours_ending(cls, end: dt.datetime, hours: int) -> TimeRange:
        return cls(end - hours * HOUR, end)

    @property
    def hour_aligned(self) -> bool:
        """Both ends on hour boundaries: the hour partitions hold exactly the range's trades."""
        return floor_hour(self.since) == self.since and floor_hour(self.until) == self.until

    def partitions(self) -> list[tuple[dt.date, int]]:
        """The (exchange_date, exchange_hour) partitions the range touches, oldest first."""
        out = []
        h = floor_hour(self.since)
        while h < self.until:
            out.append((h.date(), h.hour))
            h += HOUR
        return out

    def __str__(self) -> str:
        return f"[{_iso(self.since)}, {_iso(self.until)})"


def _iso(value: dt.datetime) -> str:
    return to_utc(value).isoformat().replace("+00:00", "Z")


def _ts_literal(value: dt.datetime) -> Any:
    return literal(to_utc(value))


def _and(*terms: BooleanExpression) -> BooleanExpression:
    return functools.reduce(And, terms) if terms else AlwaysTrue()


def partition_filter(tr: TimeRange) -> BooleanExpression:
    """Predicates on the identity partition columns covering exactly the range's hours.

    Whole days become `exchange_date IN (...)`, partial days
    `exchange_date = d AND exchange_hour BETWEEN h0 AND h1`, OR-ed together.
    """
    by_day: dict[dt.date, list[int]] = {}
    for day, hour in tr.partitions():
        by_day.setdefault(day, []).append(hour)
    full = sorted(d for d, hours in by_day.items() if len(hours) == 24)
    terms: list[BooleanExpression] = []
    if len(full) == 1:
        terms.append(EqualTo(DATE_COL, full[0]))
    elif full:
        terms.append(In(DATE_COL, full))
    for day, hours in sorted(by_day.items()):
        if len(hours) == 24:
            continue
        lo, hi = hours[0], hours[-1]  # consecutive, ascending
        hour_terms: BooleanExpression = (
            EqualTo(HOUR_COL, lo)
            if lo == hi
            else And(GreaterThanOrEqual(HOUR_COL, lo), LessThanOrEqual(HOUR_COL, hi))
        )
        terms.append(And(EqualTo(DATE_COL, day), hour_terms))
    return functools.reduce(Or, terms)


def time_filter(tr: TimeRange) -> BooleanExpression:
    return And(
        GreaterThanOrEqual(TS_COL, _ts_literal(tr.since)), LessThan(TS_COL, _ts_literal(tr.until))
    )


@dataclass(frozen=True)
class TradeFilter:
    """Which trades a query reads; renders to an Iceberg row filter and to DuckDB SQL."""

    time_range: TimeRange
    symbol: str | None = None
    exchange: str | None = None

    def iceberg(self) -> BooleanExpression:
        terms = [partition_filter(self.time_range), time_filter(self.time_range)]
        if self.symbol is not None:
            terms.append(EqualTo(SYMBOL_COL, self.symbol))
        if self.exchange is not None:
            terms.append(EqualTo(EXCHANGE_COL, self.exchange))
        return _and(*terms)

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause for the planned files (partition terms are already applied by planning).

        An hour-aligned range needs no timestamp predicate: gold derives exchange_date and
        exchange_hour from the trade's UTC timestamp, so the planned hour partitions hold
        exactly the range's trades (and reading `timestamp` just to filter costs a column).
        """
        clauses: list[str] = []
        params: list[Any] = []
        if not self.time_range.hour_aligned:
            clauses += [f'"{TS_COL}" >= ?', f'"{TS_COL}" < ?']
            params += [self.time_range.since, self.time_range.until]
        if self.symbol is not None:
            clauses.append(f'"{SYMBOL_COL}" = ?')
            params.append(self.symbol)
        if self.exchange is not None:
            clauses.append(f'"{EXCHANGE_COL}" = ?')
            params.append(self.exchange)
        return (" AND ".join(clauses) or "true"), params


def normalize_symbol(symbol: str) -> str:
    """Canonical BASE/QUOTE, upper case ('btc/usdt' -> 'BTC/USDT'; Kraken's XBT -> BTC)."""
    s = symbol.strip().upper()
    if "/" not in s:
        raise ValueError(f"symbol {symbol!r} is not canonical BASE/QUOTE (e.g. BTC/USDT)")
    base, quote = s.split("/", 1)
    return f"{'BTC' if base == 'XBT' else base}/{quote}"


def normalize_exchange(exchange: str | None) -> str | None:
    from k2.contracts.trade import EXCHANGES

    if exchange is None:
        return None
    e = exchange.strip().upper()
    if e not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")
    return e


def latest_windows(newest: dt.datetime, oldest: dt.datetime) -> list[TimeRange]:
    """Disjoint hour windows going back from the newest hour: 1, 1, 2, 4, 8... hours.

    `newest` and `oldest` are hour starts (the newest and the oldest partition to read).
    """
    windows = []
    end = floor_hour(newest) + HOUR
    width = 1
    stop = floor_hour(oldest)
    while end > stop:
        start = max(end - width * HOUR, stop)
        windows.append(TimeRange(start, end))
        end = start
        width = 1 if len(windows) == 1 else width * 2
    return windows


def vwap_of(notional: Decimal, volume: Decimal) -> Decimal | None:
    """sum(p*q) / sum(q), rounded half-even to the price scale (8 places)."""
    if not volume:
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        return (notional / volume).quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class ScanStats:
    files: int = 0  # data files read
    bytes: int = 0
    rows_in_files: int = 0
    partitions: set[tuple[dt.date, int]] = field(default_factory=set)
    plans: int = 0  # plan_files calls (latest probes)
    plan_ms: float = 0.0
    read_ms: float = 0.0
    fallback_files: int = 0  # read through pyiceberg's ArrowScan (deletes / remote / renamed)
    metadata_files: int = 0  # answered from manifest record counts, not read (counts)

    def add_tasks(self, tasks: Sequence[FileScanTask]) -> None:
        for t in tasks:
            self.files += 1
            self.bytes += t.file.file_size_in_bytes
            self.rows_in_files += t.file.record_count
            self.partitions.add(task_partition(t))

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "rows_in_files": self.rows_in_files,
            "partitions": [f"{d.isoformat()}/{h:02d}" for d, h in sorted(self.partitions)],
            "plans": self.plans,
            "plan_ms": round(self.plan_ms, 2),
            "read_ms": round(self.read_ms, 2),
            "fallback_files": self.fallback_files,
            "metadata_files": self.metadata_files,
        }


@dataclass
class QueryResult:
    query: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    params: dict[str, Any] = field(default_factory=dict)
    stats: ScanStats = field(default_factory=ScanStats)
    message: str | None = None
    elapsed_ms: float = 0.0

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "columns": self.columns,
            "rows": [{k: _jsonable(v) for k, v in r.items()} for r in self.records()],
            "message": self.message,
            "elapsed_ms": round(self.elapsed_ms, 2),
            "scan": self.stats.to_dict(),
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")  # exact, as a string
    if isinstance(v, dt.datetime):
        return _iso(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, TimeRange):
        return {"since": _iso(v.since), "until": _iso(v.until)}
    return v


def format_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        s = format(v, "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    if isinstance(v, dt.datetime):
        return to_utc(v).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Aligned columns; numbers right-aligned."""
    raw = [list(r) for r in rows]
    cells = [[format_value(v) for v in r] for r in raw]
    numeric = [
        all(isinstance(r[i], int | float | Decimal) or r[i] is None for r in raw) and bool(raw)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


def task_partition(task: FileScanTask) -> tuple[dt.date, int]:
    """(exchange_date, exchange_hour) of a planned file."""
    part = task.file.partition
    day, hour = part[0], part[1]
    if isinstance(day, int):
        day = _EPOCH.date() + dt.timedelta(days=day)
    return day, int(hour)


def single_value(lower: Any, upper: Any) -> str | None:
    """A string column's only value in a file, from its manifest bounds (None if not one)."""
    if lower is None or upper is None or bytes(lower) != bytes(upper):
        return None
    return bytes(lower).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Extent:
    """Oldest and newest hour partitions holding data (hour starts, UTC)."""

    oldest: dt.datetime
    newest: dt.datetime

    @property
    def end(self) -> dt.datetime:
        return self.newest + HOUR


class GoldReader:
    """Answers gold queries; keeps the table object (its metadata) cached in process."""

    def __init__(self, table: Table, *, duckdb_threads: int = 2, read_path: str = "auto") -> None:
        """read_path: "auto" (DuckDB on the files when safe) or "arrow" (always pyiceberg's ArrowScan)."""
        if read_path not in ("auto", "arrow"):
            raise ValueError("read_path must be 'auto' or 'arrow'")
        self.table = table
        self._threads = duckdb_threads
        self._read_path = read_path
        self._con: duckdb.DuckDBPyConnection | None = None
        self._extent: dict[int, Extent | None] = {}
        self._manifest_lists: dict[int, list[Any]] = {}
        self._entries = _EntryCache(_MAX_CACHED_MANIFESTS)

    @classmethod
    def load(cls, catalog: Any, identifier: str = GOLD.identifier, **kwargs: Any) -> GoldReader:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            table = catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise GoldTableMissing(
                f"table {identifier} does not exist in the catalog: run `k2 up` or `k2 tables apply` first"
            ) from exc
        return cls(table, **kwargs)

    def refresh(self) -> None:
        """Reload the table metadata (one catalog round trip): sees new commits."""
        self.table = self.table.refresh()

    # -- plumbing -----------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            import duckdb

            self._con = duckdb.connect(config={"threads": str(self._threads)})
            self._con.execute("SET TimeZone = 'UTC'")
            # DuckDB's late materialization turns top-N into a second, unfiltered read of every
            # column of the file (a semi-join on row numbers): twice as slow for `latest` here.
            self._con.execute("SET late_materialization_max_rows = 0")
        return self._con

    def extent(self) -> Extent | None:
        """From the manifest list's partition summaries: no data file is opened."""
        snap = self.table.current_snapshot()
        if snap is None:
            return None
        if snap.snapshot_id not in self._extent:
            self._extent[snap.snapshot_id] = self._compute_extent(snap)
        return self._extent[snap.snapshot_id]

    def _compute_extent(self, snap: Any) -> Extent | None:
        """Oldest hour: the per-field lower bounds of the manifests' partition summaries (a
        bound, which only limits how far `latest` widens). Newest hour: exact, from the
        partitions of the data files of the newest date (one pruned planning call)."""
        from pyiceberg.conversions import from_bytes
        from pyiceberg.manifest import ManifestContent

        schema = self.table.schema()
        specs = self.table.specs()
        date_id, hour_id = (
            schema.find_field(DATE_COL).field_id,
            schema.find_field(HOUR_COL).field_id,
        )
        date_type, hour_type = (
            cast(Any, schema.find_type(date_id)),
            cast(Any, schema.find_type(hour_id)),
        )
        newest_day: int | None = None
        oldest: tuple[int, int] | None = None
        for manifest in self._manifests(snap):
            if manifest.content != ManifestContent.DATA:
                continue
            if manifest.added_files_count == 0 and manifest.existing_files_count == 0:
                continue
            idx = {f.source_id: i for i, f in enumerate(specs[manifest.partition_spec_id].fields)}
            if date_id not in idx or hour_id not in idx or not manifest.partitions:
                return _unbounded_extent()
            ds, hs = manifest.partitions[idx[date_id]], manifest.partitions[idx[hour_id]]
            if None in (ds.lower_bound, ds.upper_bound, hs.lower_bound):
                return _unbounded_extent()
            lo = (
                int(from_bytes(date_type, ds.lower_bound)),
                int(from_bytes(hour_type, hs.lower_bound)),
            )
            hi_day = int(from_bytes(date_type, ds.upper_bound))
            oldest = lo if oldest is None or lo < oldest else oldest
            newest_day = hi_day if newest_day is None or hi_day > newest_day else newest_day
        if newest_day is None or oldest is None:
            return None
        day = _EPOCH.date() + dt.timedelta(days=newest_day)
        tasks = self.plan(EqualTo(DATE_COL, day), ScanStats())
        hours = [task_partition(t)[1] for t in tasks]
        newest = _hour_start(day, max(hours)) if hours else _hour_start(day, 23)
        return Extent(_hour_start(*oldest), newest)

    def _fast_columns_ok(self, columns: Iterable[str]) -> bool:
        """True when every schema in the table's history gives these names the same field id."""
        current = self.table.schema()
        for name in columns:
            fid = current.find_field(name).field_id
            for schema in self.table.metadata.schemas:
                try:
                    if schema.find_field(name).field_id != fid:
                        return False
                except ValueError:
                    return False
        return True

    def plan(self, row_filter: BooleanExpression, stats: ScanStats) -> list[FileScanTask]:
        """The file scan tasks of `table.scan(row_filter).plan_files()`, with metadata cached.

        Same pyiceberg planner (ManifestGroupPlanner: manifest summaries, partition and
        metrics evaluators, delete-file index), planned locally; the manifest list of each
        snapshot and the entries of each manifest are read once, as both are immutable.
        """
        from pyiceberg.table import ManifestGroupPlanner

        t0 = time.perf_counter()
        snap = self.table.current_snapshot()
        tasks: list[FileScanTask] = []
        if snap is not None:
            planner = ManifestGroupPlanner(self.table.metadata, self.table.io, row_filter)
            tasks = list(planner.plan_files(self._manifests(snap)))
        stats.plan_ms += (time.perf_counter() - t0) * 1000
        stats.plans += 1
        stats.add_tasks(tasks)
        return tasks

    def _counted_from_metadata(self, tasks: Sequence[FileScanTask]) -> dict[str, str]:
        """path -> exchange, for the files whose bounds say they hold one exchange and no nulls."""
        fid = self.table.schema().find_field(EXCHANGE_COL).field_id
        if not self._fast_columns_ok([EXCHANGE_COL]):
            return {}
        out = {}
        for t in tasks:
            f = t.file
            if t.delete_files or (f.null_value_counts or {}).get(fid, 0):
                continue
            exchange = single_value(
                (f.lower_bounds or {}).get(fid), (f.upper_bounds or {}).get(fid)
            )
            if exchange is not None:
                out[f.file_path] = exchange
        return out

    def _manifests(self, snap: Any) -> list[Any]:
        key = snap.snapshot_id
        if key not in self._manifest_lists:
            if len(self._manifest_lists) >= _MAX_CACHED_SNAPSHOTS:
                self._manifest_lists.pop(next(iter(self._manifest_lists)))
            self._manifest_lists[key] = [
                _CachedManifest(m, self._entries) for m in snap.manifests(self.table.io)
            ]
        return self._manifest_lists[key]

    def sql(
        self,
        tasks: Sequence[FileScanTask],
        columns: Sequence[str],
        query: str,
        params: Sequence[Any],
        stats: ScanStats,
        row_filter: BooleanExpression,
    ) -> pa.Table:
        """Run `query` (which selects FROM {src}) over the planned files; returns Arrow."""
        import pyarrow as pa

        if not tasks:
            return pa.table({})
        t0 = time.perf_counter()
        try:
            # One read path per query, so aggregates never need merging across paths.
            fast = self._read_path == "auto" and self._fast_columns_ok(columns)
            if fast and all(_fast_eligible(t) for t in tasks):
                paths = [_local_path(t.file.file_path) for t in tasks]
                src = "read_parquet(?, hive_partitioning = false)"
                return self.con.execute(query.format(src=src), [paths, *params]).fetch_arrow_table()
            stats.fallback_files += len(tasks)
            return self._sql_arrow_scan(tasks, columns, query, params, row_filter)
        finally:
            stats.read_ms += (time.perf_counter() - t0) * 1000

    def _sql_arrow_scan(
        self,
        tasks: Sequence[FileScanTask],
        columns: Sequence[str],
        query: str,
        params: Sequence[Any],
        row_filter: BooleanExpression,
    ) -> pa.Table:
        from pyiceberg.io.pyarrow import ArrowScan

        projected = self.table.schema().select(*columns)
        arrow = ArrowScan(self.table.metadata, self.table.io, projected, row_filter).to_table(tasks)
        self.con.register("_k2_scan", arrow)
        try:
            return self.con.execute(query.format(src="_k2_scan"), list(params)).fetch_arrow_table()
        finally:
            self.con.unregister("_k2_scan")

    def _no_data(
        self, query: str, columns: list[str], params: dict[str, Any], t0: float
    ) -> QueryResult:
        return QueryResult(
            query,
            columns,
            [],
            params,
            message=f"{self.table.name()[-1] if self.table.name() else 'gold'} has no data yet",
            elapsed_ms=(time.perf_counter() - t0) * 1000,
        )

    def _default_range(self, tr: TimeRange | None, key: str) -> TimeRange | None:
        if tr is not None:
            return tr
        ext = self.extent()
        if ext is None:
            return None
        return TimeRange.hours_ending(ext.end, DEFAULT_WINDOW_HOURS[key])

    def _empty_message(self, symbol: str, tr: TimeRange | None, exchange: str | None) -> str:
        where = f" on {exchange}" if exchange else ""
        when = f" in {tr}" if tr else ""
        msg = f"no trades for {symbol}{where}{when}"
        known = self.symbols_in_newest_hour()
        if known and symbol not in known:
            msg += f"; symbols in the newest hour of data: {', '.join(known)}"
        return msg

    def symbols_in_newest_hour(self) -> list[str]:
        ext = self.extent()
        if ext is None:
            return []
        tr = TimeRange(ext.newest, ext.end)
        stats = ScanStats()
        f = TradeFilter(tr)
        tasks = self.plan(partition_filter(tr), stats)
        q = f'SELECT DISTINCT "{SYMBOL_COL}" AS s FROM {{src}} ORDER BY s'  # noqa: S608 - contract column names; values are bound parameters
        out = self.sql(tasks, [SYMBOL_COL], q, [], stats, f.iceberg())
        return [str(s) for s in out.column("s").to_pylist()]

    # -- queries ------------------------------------------------------------

    LATEST_COLUMNS = (TS_COL, EXCHANGE_COL, SYMBOL_COL, SIDE_COL, PRICE_COL, QTY_COL, TRADE_ID_COL)

    def latest(
        self,
        symbol: str,
        limit: int = 20,
        *,
        exchange: str | None = None,
        lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    ) -> QueryResult:
        """The newest `limit` trades of a symbol, newest first.

        Reads the newest hour partition first; widens backwards only while short.
        """
        t0 = time.perf_counter()
        columns = list(self.LATEST_COLUMNS)
        params: dict[str, Any] = {"symbol": symbol, "limit": limit, "exchange": exchange}
        if limit <= 0:
            raise ValueError("limit must be positive")
        ext = self.extent()
        if ext is None:
            return self._no_data("latest", columns, params, t0)
        oldest = max(ext.oldest, ext.newest - (lookback_hours - 1) * HOUR)
        stats = ScanStats()
        select = ", ".join(f'"{c}"' for c in columns)
        got: list[pa.Table] = []
        have = 0
        for window in latest_windows(ext.newest, oldest):
            f = TradeFilter(window, symbol, exchange)
            tasks = self.plan(f.iceberg(), stats)
            if not tasks:
                continue
            where, where_params = f.sql()
            q = (
                f"SELECT {select} FROM {{src}} WHERE {where} "  # noqa: S608 - contract column names; values are bound parameters
                f'ORDER BY "{TS_COL}" DESC, "{TRADE_ID_COL}" DESC LIMIT {limit - have}'
            )
            part = self.sql(tasks, [*columns], q, where_params, stats, f.iceberg())
            if part.num_rows:
                got.append(part)
                have += part.num_rows
            if have >= limit:
                break
        rows = [tuple(r.values()) for t in got for r in _sorted_desc(t).to_pylist()][:limit]
        result = QueryResult(
            "latest", columns, rows, params, stats, elapsed_ms=(time.perf_counter() - t0) * 1000
        )
        if not rows:
            result.message = self._empty_message(symbol, TimeRange(oldest, ext.end), exchange)
        return result

    def ohlcv(
        self,
        symbol: str,
        interval: str,
        time_range: TimeRange | None = None,
        *,
        exchange: str | None = None,
    ) -> QueryResult:
        """Bars per exchange: open/close = first/last trade by (timestamp, trade_id)."""
        t0 = time.perf_counter()
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
        step_us = INTERVALS[interval] * 1_000_000
        columns = ["bucket", "exchange", "open", "high", "low", "close", "volume", "trades"]
        tr = self._default_range(time_range, interval)
        params: dict[str, Any] = {
            "symbol": symbol,
            "interval": interval,
            "exchange": exchange,
            "range": tr,
        }
        if tr is None:
            return self._no_data("ohlcv", columns, params, t0)
        f = TradeFilter(tr, symbol, exchange)
        stats = ScanStats()
        tasks = self.plan(f.iceberg(), stats)
        where, where_params = f.sql()
        order = f'ORDER BY "{TS_COL}", "{TRADE_ID_COL}"'  # the table's sort order breaks ties
        q = (
            f'SELECT (epoch_us("{TS_COL}") // {step_us}) * {step_us} AS bucket_us, "{EXCHANGE_COL}" AS exchange, '  # noqa: S608 - contract column names; values are bound parameters
            f'first("{PRICE_COL}" {order}) AS open, max("{PRICE_COL}") AS high, min("{PRICE_COL}") AS low, '
            f'last("{PRICE_COL}" {order}) AS close, sum("{QTY_COL}") AS volume, '
            f"count(*) AS trades FROM {{src}} WHERE {where} GROUP BY ALL"
        )
        cols = [TS_COL, TRADE_ID_COL, EXCHANGE_COL, PRICE_COL, QTY_COL, SYMBOL_COL]
        table = self.sql(tasks, cols, q, where_params, stats, f.iceberg())
        rows = sorted(
            (
                (
                    _from_us(r["bucket_us"]),
                    r["exchange"],
                    r["open"],
                    r["high"],
                    r["low"],
                    r["close"],
                    r["volume"],
                    r["trades"],
                )
                for r in table.to_pylist()
            ),
            key=lambda r: (r[0], r[1]),
        )
        result = QueryResult(
            "ohlcv", columns, rows, params, stats, elapsed_ms=(time.perf_counter() - t0) * 1000
        )
        if not rows:
            result.message = self._empty_message(symbol, tr, exchange)
        return result

    def vwap(
        self,
        symbol: str,
        time_range: TimeRange | None = None,
        *,
        exchange: str | None = None,
    ) -> QueryResult:
        """sum(price*quantity)/sum(quantity) per exchange (+ an ALL row over several), exact decimals."""
        t0 = time.perf_counter()
        columns = ["exchange", "vwap", "volume", "notional", "trades", "first", "last"]
        tr = self._default_range(time_range, "vwap")
        params: dict[str, Any] = {"symbol": symbol, "exchange": exchange, "range": tr}
        if tr is None:
            return self._no_data("vwap", columns, params, t0)
        f = TradeFilter(tr, symbol, exchange)
        stats = ScanStats()
        tasks = self.plan(f.iceberg(), stats)
        where, where_params = f.sql()
        wide = f"DECIMAL(38, {SCALE})"
        q = (
            f'SELECT "{EXCHANGE_COL}" AS exchange, '  # noqa: S608 - contract column names; values are bound parameters
            f'sum(CAST("{PRICE_COL}" AS {wide}) * CAST("{QTY_COL}" AS {wide})) AS notional, '
            f'sum("{QTY_COL}") AS volume, count(*) AS trades, '
            f'min("{TS_COL}") AS first, max("{TS_COL}") AS last '
            f"FROM {{src}} WHERE {where} GROUP BY ALL"
        )
        cols = [EXCHANGE_COL, PRICE_COL, QTY_COL, TS_COL, SYMBOL_COL]
        table = self.sql(tasks, cols, q, where_params, stats, f.iceberg())
        per: dict[str, list[Any]] = {}
        for r in table.to_pylist():  # one row per exchange (per source part)
            acc = per.setdefault(r["exchange"], [Decimal(0), Decimal(0), 0, r["first"], r["last"]])
            acc[0] += r["notional"]
            acc[1] += r["volume"]
            acc[2] += r["trades"]
            acc[3] = min(acc[3], r["first"])
            acc[4] = max(acc[4], r["last"])
        rows: list[tuple[Any, ...]] = [
            (ex, vwap_of(n, v), v, n, c, first, last)
            for ex, (n, v, c, first, last) in sorted(per.items())
        ]
        if len(per) > 1:
            n = sum((a[0] for a in per.values()), Decimal(0))
            v = sum((a[1] for a in per.values()), Decimal(0))
            c = sum(a[2] for a in per.values())
            rows.append(
                (
                    "ALL",
                    vwap_of(n, v),
                    v,
                    n,
                    c,
                    min(a[3] for a in per.values()),
                    max(a[4] for a in per.values()),
                )
            )
        result = QueryResult(
            "vwap", columns, rows, params, stats, elapsed_ms=(time.perf_counter() - t0) * 1000
        )
        if not rows:
            result.message = self._empty_message(symbol, tr, exchange)
        return result

    def counts(
        self, time_range: TimeRange | None = None, *, exchange: str | None = None
    ) -> QueryResult:
        """Trades per exchange per hour partition."""
        t0 = time.perf_counter()
        columns = [DATE_COL, HOUR_COL, "exchange", "trades"]
        tr = self._default_range(time_range, "counts")
        params: dict[str, Any] = {"exchange": exchange, "range": tr}
        if tr is None:
            return self._no_data("counts", columns, params, t0)
        f = TradeFilter(tr, None, exchange)
        stats = ScanStats()
        tasks = self.plan(f.iceberg(), stats)
        acc: dict[tuple[dt.date, int, str], int] = {}
        # Files of one exchange (compacted gold) are counted from the manifests alone:
        # their rows all match when the range is whole hours. The rest are read.
        counted = self._counted_from_metadata(tasks) if tr.hour_aligned else {}
        for task in tasks:
            if task.file.file_path in counted:
                k = (*task_partition(task), counted[task.file.file_path])
                acc[k] = acc.get(k, 0) + task.file.record_count
        stats.metadata_files += len(counted)
        rest = [t for t in tasks if t.file.file_path not in counted]
        where, where_params = f.sql()
        q = (
            f'SELECT "{DATE_COL}" AS d, "{HOUR_COL}" AS h, "{EXCHANGE_COL}" AS exchange, count(*) AS trades '  # noqa: S608 - contract column names; values are bound parameters
            f"FROM {{src}} WHERE {where} GROUP BY ALL"
        )
        cols = [DATE_COL, HOUR_COL, EXCHANGE_COL, TS_COL]
        table = self.sql(rest, cols, q, where_params, stats, f.iceberg())
        for r in table.to_pylist():
            k = (r["d"], r["h"], r["exchange"])
            acc[k] = acc.get(k, 0) + r["trades"]
        rows = [(*k, n) for k, n in sorted(acc.items())]
        result = QueryResult(
            "counts", columns, rows, params, stats, elapsed_ms=(time.perf_counter() - t0) * 1000
        )
        if not rows:
            result.message = f"no trades in {tr}"
        return result


_MAX_CACHED_SNAPSHOTS = 8
_MAX_CACHED_MANIFESTS = 4096


class _EntryCache:
    """Live entries per manifest path (manifests are immutable), least recently used out."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[str, bool], list[Any]] = OrderedDict()
        self._lock = threading.Lock()  # pyiceberg opens manifests from a thread pool

    def get(self, manifest: Any, io: Any, discard_deleted: bool) -> list[Any]:
        key = (manifest.manifest_path, discard_deleted)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        entries: list[Any] = manifest.fetch_manifest_entry(io, discard_deleted=discard_deleted)
        with self._lock:
            self._data[key] = entries
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
        return entries


class _CachedManifest:
    """A pyiceberg ManifestFile whose entries come from an `_EntryCache`."""

    def __init__(self, manifest: Any, cache: _EntryCache) -> None:
        self._manifest = manifest
        self._cache = cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manifest, name)

    def fetch_manifest_entry(self, io: Any, discard_deleted: bool = True) -> list[Any]:
        return self._cache.get(self._manifest, io, discard_deleted)


def _unbounded_extent() -> Extent:
    # Partition summaries unusable (spec evolved): fall back to a wide, still bounded range.
    now = floor_hour(dt.datetime.now(UTC))
    return Extent(now - DEFAULT_LOOKBACK_HOURS * HOUR, now)


def _hour_start(day: Any, hour: Any) -> dt.datetime:
    if isinstance(day, int):
        day = _EPOCH.date() + dt.timedelta(days=day)
    return dt.datetime.combine(day, dt.time(int(hour)), UTC)


def _fast_eligible(task: FileScanTask) -> bool:
    """DuckDB may read the file itself: a local parquet file without delete files."""
    path = task.file.file_path
    local = path.startswith(("/", "file:"))
    return (
        local and not task.delete_files and str(task.file.file_format).upper().endswith("PARQUET")
    )


def _local_path(path: str) -> str:
    if path.startswith("file://"):
        return path[len("file://") :]
    if path.startswith("file:"):
        return path[len("file:") :]
    return path


def _from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _sorted_desc(table: pa.Table) -> pa.Table:
    return table.sort_by([(TS_COL, "descending"), (TRADE_ID_COL, "descending")])
