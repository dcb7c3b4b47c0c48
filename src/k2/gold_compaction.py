"""Compaction of gold: each closed hour rewritten as one file per exchange and symbol.

Why: the streaming gold job adds a small file per micro-batch and hour, each holding
every symbol. A query for one symbol over a day then opens every file and reads every
row. Compaction rewrites each closed hour into one file per (exchange, symbol), sorted by
the table's sort order (timestamp, trade_id); the manifests' bounds on `symbol` then
let the planner skip the other symbols' files, so one symbol over a day reads only its
own rows (BTC/USDT, the busiest, is 29% of the synthetic day; the rest far less), and
trades per exchange per hour are the files' record counts, read from the manifests.

Nothing changes in the data: the rewrite of an hour is one atomic Iceberg commit that
removes exactly the files it read and adds files holding exactly their rows (counted
before the commit). If the gold job commits in between, the catalog refuses the
commit (the snapshot it was based on is no longer current) and the hour is re-read
and retried. Only hours that ended at least `grace` ago are touched, so the hour the
gold job is writing is left alone; a late trade landing in a compacted hour makes it
"not clustered" again and the next run compacts it again.

pyarrow 21 cannot write parquet bloom filters, so rewritten files lack the one on
message_id that Spark writes (`write.parquet.bloom-filter-enabled.column.message_id`);
no reader here uses it (the gold job's MERGE joins on message_id, which bloom filters
do not serve) and the symbol bounds are what the queries prune on.

Pure: `FileFacts`, `is_clustered`, `hours_to_compact`, `split_clusters`.
I/O: `file_facts(table)`, `compact_hour(table, hour)`, `compact(table)`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from k2.contracts.tables import GOLD
from k2.pipeline import CompactionSettings

if TYPE_CHECKING:
    from pyiceberg.table import Table

UTC = dt.UTC
DATE_COLUMN, HOUR_COLUMN = (p.source for p in GOLD.partition_by)
SORT_COLUMNS: tuple[str, ...] = tuple(s.source for s in GOLD.sort_by)
# One file per (exchange, symbol): the planner prunes on symbol, and per-exchange counts
# come from the manifests' record counts alone (k2.gold_queries).
CLUSTER_COLUMNS: tuple[str, ...] = ("exchange", "symbol")
# the declaration's default (spec.compaction.graceMinutes), for callers without one
DEFAULT_GRACE = dt.timedelta(minutes=CompactionSettings.grace_minutes)
# A snapshot property that marks compaction commits (readers and auditors can skip them).
SNAPSHOT_PROPERTY = "k2.compaction"


@dataclass(frozen=True, order=True)
class Hour:
    """One gold partition: (exchange_date, exchange_hour)."""

    date: dt.date
    hour: int

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.date, dt.time(self.hour), UTC) + dt.timedelta(hours=1)

    def __str__(self) -> str:
        return f"{self.date.isoformat()} {self.hour:02d}:00"


@dataclass(frozen=True)
class FileFacts:
    """What the manifests say about one data file."""

    path: str
    hour: Hour
    records: int
    # the file's one value of each CLUSTER_COLUMNS column, when its bounds say so; else None
    cluster_key: tuple[str, ...] | None
    has_deletes: bool = False


def is_clustered(files: Sequence[FileFacts]) -> bool:
    """True when every file holds one (exchange, symbol) and no such pair has two files."""
    keys = [f.cluster_key for f in files]
    return None not in keys and len(set(keys)) == len(keys)


def hours_to_compact(files: Iterable[FileFacts], closed_before: dt.datetime) -> list[Hour]:
    """Closed hours (ended by `closed_before`) whose files are not yet one per (exchange, symbol).

    Hours with delete files are skipped: gold is insert-only, so they would mean someone
    else edited it, and rewriting would have to apply those deletes first.
    """
    by_hour: dict[Hour, list[FileFacts]] = defaultdict(list)
    for f in files:
        by_hour[f.hour].append(f)
    return sorted(
        h
        for h, fs in by_hour.items()
        if h.end <= closed_before and not any(f.has_deletes for f in fs) and not is_clustered(fs)
    )


def split_clusters(rows: pa.Table) -> list[pa.Table]:
    """One table per (exchange, symbol), each sorted by the gold sort order; no row lost or added."""
    if rows.num_rows == 0:
        return []
    keys = [(c, "ascending") for c in (*CLUSTER_COLUMNS, *SORT_COLUMNS)]
    ordered = rows.take(pc.sort_indices(rows, keys))
    n = ordered.num_rows
    # run boundaries: a row starts a run when any cluster column differs from the row before
    changed = None
    for name in CLUSTER_COLUMNS:
        col = ordered.column(name).combine_chunks()
        diff = pc.not_equal(col.slice(1), col.slice(0, n - 1))
        changed = diff if changed is None else pc.or_(changed, diff)
    assert changed is not None
    starts = [0, *(i + 1 for i in pc.indices_nonzero(changed).to_pylist()), n]
    return [ordered.slice(a, b - a) for a, b in itertools.pairwise(starts)]


@dataclass
class HourResult:
    hour: Hour
    rows: int
    files_before: int
    files_after: int
    seconds: float
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "hour": str(self.hour),
            "rows": self.rows,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
        }


def file_facts(table: Table) -> list[FileFacts]:
    """FileFacts of every live data file of the current snapshot."""
    from k2.gold_queries import single_value, task_partition

    ids = [table.schema().find_field(c).field_id for c in CLUSTER_COLUMNS]
    facts = []
    for task in table.scan().plan_files():
        f = task.file
        lower, upper = f.lower_bounds or {}, f.upper_bounds or {}
        values = [single_value(lower.get(i), upper.get(i)) for i in ids]
        facts.append(
            FileFacts(
                path=f.file_path,
                hour=Hour(*task_partition(task)),
                records=int(f.record_count),
                cluster_key=None if None in values else tuple(v for v in values if v is not None),
                has_deletes=bool(task.delete_files),
            )
        )
    return facts


def _hour_filter(hour: Hour) -> Any:
    from k2.gold_queries import TimeRange, partition_filter

    return partition_filter(TimeRange(hour.end - dt.timedelta(hours=1), hour.end))


def compact_hour(table: Table, hour: Hour, *, max_attempts: int = 5) -> HourResult:
    """Rewrite one hour as one file per (exchange, symbol), in one commit; retried on conflicts."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    t0 = time.perf_counter()
    for attempt in range(1, max_attempts + 1):
        table.refresh()
        scan = table.scan(row_filter=_hour_filter(hour))
        tasks = list(scan.plan_files())
        if any(t.delete_files for t in tasks):
            raise RuntimeError(f"gold hour {hour} has delete files; not compacting it")
        expected = sum(t.file.record_count for t in tasks)
        rows = scan.to_arrow()
        if rows.num_rows != expected:
            raise RuntimeError(
                f"gold hour {hour}: read {rows.num_rows} rows from files that hold {expected}"
            )
        pieces = split_clusters(rows)
        if sum(p.num_rows for p in pieces) != expected:
            raise AssertionError(f"gold hour {hour}: split lost rows")  # pragma: no cover
        try:
            with warnings.catch_warnings(), table.transaction() as tx:
                warnings.filterwarnings(
                    "ignore", message=r"Parquet writer option\(s\) .*bloom-filter"
                )
                props = {SNAPSHOT_PROPERTY: str(hour)}
                with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
                    # Conflicts are checked against this hour only: a gold commit to another
                    # hour (the current one) does not make this rewrite start over.
                    rewrite.delete_by_predicate(_hour_filter(hour))
                    for t in tasks:
                        rewrite.delete_data_file(t.file)
                    added = 0
                    names = itertools.count(0)  # shared: file names are uuid + counter
                    for piece in pieces:
                        for data_file in _dataframe_to_data_files(
                            tx.table_metadata,
                            df=piece,
                            io=table.io,
                            write_uuid=rewrite.commit_uuid,
                            counter=names,
                        ):
                            rewrite.append_data_file(data_file)
                            added += 1
        except (CommitFailedException, ValidationException):
            # another writer committed to the table (pyiceberg's own retry validates that
            # no files were added to this hour meanwhile, and refuses if they were)
            if attempt == max_attempts:
                raise
            time.sleep(0.2 * attempt)
            continue
        return HourResult(hour, expected, len(tasks), added, time.perf_counter() - t0, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def compact(
    table: Table,
    *,
    now: dt.datetime | None = None,
    grace: dt.timedelta = DEFAULT_GRACE,
    hours: Sequence[Hour] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[HourResult]:
    """Compact every closed, not yet clustered hour of `table` (or just `hours`)."""
    closed_before = (now or dt.datetime.now(UTC)) - grace
    todo = list(hours) if hours is not None else hours_to_compact(file_facts(table), closed_before)
    results = []
    for i, hour in enumerate(todo, 1):
        result = compact_hour(table, hour)
        results.append(result)
        if progress:
            progress(
                f"[{i}/{len(todo)}] {hour}: {result.rows:,} rows, "
                f"{result.files_before} -> {result.files_after} files in {result.seconds:.1f}s"
            )
    return results


__all__ = [
    "DEFAULT_GRACE",
    "FileFacts",
    "Hour",
    "HourResult",
    "compact",
    "compact_hour",
    "file_facts",
    "hours_to_compact",
    "is_clustered",
    "split_clusters",
]
