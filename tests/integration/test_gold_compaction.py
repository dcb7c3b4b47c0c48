"""Gold compaction against the real Iceberg REST catalog: same rows, one file per exchange and symbol.

A synthetic day (k2.gold_fixture) is written as a streaming gold job leaves it, several
files per hour each holding every symbol; compaction then rewrites the closed hours.
Checked: every row kept exactly once, each new file one exchange and symbol, sorted by the gold
sort order, open hours untouched, query answers unchanged, one-symbol scans planned on
that symbol's files only, a second run a no-op, and a commit that raced with another
writer retried on the new snapshot without losing the other writer's rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from k2 import gold_compaction, iceberg_ddl
from k2.catalog import load_catalog
from k2.contracts.tables import GOLD
from k2.gold_compaction import (
    Hour,
    compact,
    compact_hour,
    file_facts,
    hours_to_compact,
    is_clustered,
)
from k2.gold_fixture import FixtureParams, generate_hours, gold_arrow_schema, write_gold
from k2.gold_queries import GoldReader, TimeRange, TradeFilter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

UTC = dt.UTC
DAY = dt.date(2025, 6, 2)
NOW = dt.datetime(2025, 6, 2, 21, 10, tzinfo=UTC)  # with 15 min grace: hours 0..19 closed
GRACE = dt.timedelta(minutes=15)


@pytest.fixture
def gold(catalog: dict[str, Any]) -> Iterator[Any]:
    cat = load_catalog(catalog["uri"], catalog["warehouse"])
    spec = dataclasses.replace(GOLD, namespace=f"k2_test_compact_{uuid.uuid4().hex[:8]}")
    iceberg_ddl.apply(cat, iceberg_ddl.plan_in(cat, spec))
    table = cat.load_table(spec.identifier)
    params = FixtureParams(trades_per_day=24_000, days=(DAY,))
    write_gold(table, generate_hours(gold_arrow_schema(table), params), files_per_hour=3)
    yield cat.load_table(spec.identifier)
    iceberg_ddl.drop(cat, spec.identifier, purge=True)


def _ids(table: Any) -> list[str]:
    table.refresh()
    ids: list[str] = table.scan(selected_fields=("message_id",)).to_arrow().column(0).to_pylist()
    return ids


def _answers(table: Any) -> list[Any]:
    table.refresh()
    reader = GoldReader(table)
    day = TimeRange.day(DAY)
    return [
        reader.ohlcv("BTC/USDT", "1h", day).rows,
        reader.ohlcv("XRP/USD", "15m", day).rows,
        reader.vwap("ETH/USDT", day).rows,
        reader.counts(day).rows,
        reader.latest("SOL/USDT", 50).rows,
    ]


def test_compaction_rewrites_closed_hours_one_file_per_symbol(gold: Any) -> None:
    ids_before = _ids(gold)
    answers_before = _answers(gold)
    assert len(file_facts(gold)) == 72

    results = compact(gold, now=NOW, grace=GRACE)

    assert [r.hour for r in results] == [Hour(DAY, h) for h in range(20)]
    assert all(r.files_before == 3 and r.attempts == 1 for r in results)
    ids_after = _ids(gold)
    assert len(ids_after) == len(set(ids_after)) == len(ids_before)
    assert set(ids_after) == set(ids_before)

    by_hour: dict[int, list[gold_compaction.FileFacts]] = {}
    for f in file_facts(gold):
        by_hour.setdefault(f.hour.hour, []).append(f)
    for hour, files in by_hour.items():
        assert is_clustered(files) is (hour < 20), hour
        if hour >= 20:
            assert len(files) == 3  # the open hours are the gold job's, untouched
    for f in by_hour[7]:
        rows = pq.ParquetFile(f.path.removeprefix("file://")).read(
            columns=["symbol", "timestamp", "trade_id"]
        )
        assert pc.count_distinct(rows.column("symbol")).as_py() == 1
        ordered = rows.take(
            pc.sort_indices(rows, [("timestamp", "ascending"), ("trade_id", "ascending")])
        )
        assert ordered.equals(rows), f"{f.path} not sorted by (timestamp, trade_id)"

    assert _answers(gold) == answers_before
    counts = GoldReader(gold).counts(TimeRange.day(DAY))
    compacted_files = sum(len(fs) for h, fs in by_hour.items() if h < 20)
    assert counts.stats.metadata_files == compacted_files  # counted from the manifests
    assert counts.stats.files - counts.stats.metadata_files == 4 * 3  # the open hours, read

    # a one-symbol scan of a compacted hour plans exactly that symbol's file
    tr = TimeRange(dt.datetime(2025, 6, 2, 5, tzinfo=UTC), dt.datetime(2025, 6, 2, 8, tzinfo=UTC))
    tasks = list(gold.scan(row_filter=TradeFilter(tr, symbol="ETH/BTC").iceberg()).plan_files())
    assert len(tasks) == 3

    snap = gold.current_snapshot()
    assert snap.summary is not None and snap.summary.get("k2.compaction") == str(Hour(DAY, 19))
    assert compact(gold, now=NOW, grace=GRACE) == []  # idempotent


def _new_rows_of_hour(gold: Any, hour: int, n: int, prefix: str) -> pa.Table:
    """`n` rows of an hour of `gold` under new message ids: what a writer would add to it."""
    rows = gold.scan(
        row_filter=f"exchange_date = '{DAY.isoformat()}' AND exchange_hour = {hour}", limit=n
    ).to_arrow()
    ids = pa.array([f"{prefix}-{i}" for i in range(rows.num_rows)])
    return rows.set_column(rows.schema.get_field_index("message_id"), "message_id", ids)


def _append_during_first_split(
    gold: Any, monkeypatch: pytest.MonkeyPatch, rows: pa.Table
) -> list[int]:
    """Another writer appends `rows` while compaction's first attempt is between its read and
    its commit; returns (once it happened) the row count that attempt had read."""
    real_split = gold_compaction.split_clusters
    read: list[int] = []

    def split_while_another_writer_commits(hour_rows: pa.Table) -> list[pa.Table]:
        if not read:
            read.append(hour_rows.num_rows)
            gold.catalog.load_table(gold.name()).append(rows)
        return real_split(hour_rows)

    monkeypatch.setattr(gold_compaction, "split_clusters", split_while_another_writer_commits)
    return read


def test_a_commit_that_raced_another_writer_is_retried_on_the_new_snapshot(
    gold: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = Hour(DAY, 3)
    late = _new_rows_of_hour(gold, 3, 5, "late")
    before = len(_ids(gold))
    raced = _append_during_first_split(gold, monkeypatch, late)
    result = compact_hour(gold, hour)

    assert result.attempts == 2
    assert result.rows == raced[0] + late.num_rows
    ids = _ids(gold)
    assert len(ids) == len(set(ids)) == before + late.num_rows
    assert is_clustered([f for f in file_facts(gold) if f.hour == hour])


def test_a_commit_to_another_hour_meanwhile_is_no_conflict(
    gold: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gold job keeps appending to the current hour while a closed one is compacted."""
    other_hour = _new_rows_of_hour(gold, 22, 3, "now")
    before = len(_ids(gold))
    appended = _append_during_first_split(gold, monkeypatch, other_hour)
    result = compact_hour(gold, Hour(DAY, 3))
    assert appended and result.attempts == 1
    assert len(_ids(gold)) == before + other_hour.num_rows


def settled(table: Any) -> bool:
    """Every hour of the (long closed) day is one file per exchange and symbol."""
    table.refresh()
    return hours_to_compact(file_facts(table), dt.datetime.now(UTC)) == []


@pytest.fixture
def where(gold: Any, catalog: dict[str, Any], tmp_path: Path) -> list[str]:
    """`k2 tables` arguments naming the test's gold table (a declaration in its namespace)."""
    from k2_jobs.testdata import pipeline_yaml

    decl = tmp_path / "pipeline.yaml"
    decl.write_text(
        pipeline_yaml(
            bootstrap="127.0.0.1:1",
            registry="http://127.0.0.1:1",
            catalog=catalog["uri"],
            warehouse=catalog["warehouse"],
            checkpoints=str(tmp_path / "ckpt"),
            namespace=gold.name()[0],
        )
    )
    return ["-f", str(decl), "--catalog-uri", catalog["uri"], "--warehouse", catalog["warehouse"]]


def test_k2_tables_compact_cli(
    gold: Any, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from k2 import tables_cli

    assert tables_cli.main(["compact", *where, "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned == [str(Hour(DAY, h)) for h in range(24)]  # the whole day is long closed

    assert tables_cli.main(["compact", *where, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert [r["hour"] for r in done] == planned
    assert sum(r["rows"] for r in done) == len(_ids(gold))
    assert tables_cli.main(["compact", *where]) == 0
    assert "already one file per exchange and symbol" in capsys.readouterr().out
    assert tables_cli.main(["compact", *where, "--grace", "-1"]) == 2
    assert tables_cli.main(["compact", *where, "--every", "0"]) == 2


def test_k2_tables_compact_every_runs_until_sigterm(
    gold: Any, where: list[str], tmp_path: Path
) -> None:
    """The long-running form `k2 up` starts: compacts, keeps going, stops cleanly on SIGTERM."""
    log = tmp_path / "compact.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "tables", "compact", *where, "--every", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if settled(gold):
                break
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        assert settled(gold), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "every 1s" in text and "compacted 24 hour(s)" in text, text
