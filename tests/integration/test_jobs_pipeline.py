"""Bronze, silver and gold against real Kafka, Apicurio, the Iceberg REST catalog and local Spark.

Two rounds of a known mix of valid and invalid trade v3 records for both exchanges, each
followed by the three jobs with availableNow triggers (in this process, on the shared
session). Round 2 re-sends trades of round 1 (duplicates across batches) and sends late
trades from hours ago. Then a replay: the last commit of every checkpoint is removed, as
a crash between the sink's commit and the checkpoint's would leave it, and each job runs
again: nothing may change.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from k2 import iceberg_ddl
from k2.catalog import load_catalog
from k2.contracts.tables import ALL_TABLES, BRONZE, DLQ, GOLD, SILVERS, TableSpec
from k2.pipeline import Pipeline
from k2_jobs import bronze, gold, silver, testdata
from k2_jobs.common import JobOptions, run_query
from k2_jobs.transforms import ErrorType

pytestmark = pytest.mark.integration

NAMESPACE = "k2_it_jobs"
UTC = dt.UTC


@dataclass
class Expected:
    bronze: int = 0
    silver: Counter[str] = field(default_factory=Counter)  # exchange -> rows (duplicates included)
    dlq: Counter[str] = field(default_factory=Counter)  # error_type -> rows
    gold: dict[str, dt.datetime] = field(default_factory=dict)  # message_id -> exchange time


@dataclass
class Env:
    pipeline: Pipeline
    producer: testdata.Producer
    spark: SparkSession
    expected: Expected
    now: dt.datetime

    def table(self, spec: TableSpec) -> str:
        """The table's name, refreshed: the shared session caches catalog tables, and the
        jobs commit through their own (cloned) sessions."""
        name = f"k2.{self.pipeline.namespace}.{spec.name}"
        self.spark.sql(f"REFRESH TABLE {name}")
        return name

    def count(self, spec: TableSpec) -> int:
        return int(self.spark.table(self.table(spec)).count())


def run_all(env: Env) -> None:
    opts = JobOptions(available_now=True)
    for job in (bronze, silver, gold):
        run_query(env.spark, env.pipeline, opts, job.start)


def send_valid(env: Env, exchange: str, numbers: range, ts: dt.datetime) -> None:
    topic = env.producer.topic(exchange)
    for n in numbers:
        t = testdata.trade(exchange, n, ts + dt.timedelta(milliseconds=n))
        env.producer.send(topic, t)
        env.expected.silver[exchange] += 1
        env.expected.gold[t["message_id"]] = t["timestamp"]


def send_invalid(env: Env, tag: str) -> None:
    for topic, value, error_type in testdata.invalid_records(env.producer, env.now, tag):
        env.producer.raw(topic, value, key="BAD")
        env.expected.dlq[error_type] += 1


@pytest.fixture(scope="module")
def env(make_pipeline: Callable[..., Any], spark: SparkSession) -> Env:
    p = make_pipeline("jobs", NAMESPACE)
    return Env(
        p.pipeline, p.producer, spark, Expected(), dt.datetime.now(UTC).replace(microsecond=0)
    )


@pytest.fixture(scope="module")
def round1(env: Env) -> Env:
    now = env.now - dt.timedelta(seconds=30)
    send_valid(env, "BINANCE", range(0, 200), now)
    send_valid(env, "KRAKEN", range(0, 150), now)
    send_valid(env, "BINANCE", range(0, 10), now)  # producer retry: same trades again
    send_invalid(env, "r1")
    env.producer.flush()
    run_all(env)
    return env


@pytest.fixture(scope="module")
def round2(round1: Env) -> Env:
    env = round1
    now = env.now - dt.timedelta(seconds=30)
    send_valid(env, "BINANCE", range(100, 150), now)  # re-sent after a reconnect
    send_valid(env, "KRAKEN", range(0, 20), now)  # late re-send
    three_hours_ago = env.now - dt.timedelta(hours=3)
    send_valid(env, "BINANCE", range(200, 250), three_hours_ago)  # late trades
    send_valid(env, "KRAKEN", range(150, 200), env.now - dt.timedelta(days=2))
    send_invalid(env, "r2")
    env.producer.flush()
    run_all(env)
    env.expected.bronze = env.producer.sent
    return env


def test_bronze_has_every_kafka_record_exactly_once(round2: Env) -> None:
    env = round2
    rows = env.spark.table(env.table(BRONZE)).select("topic", "partition", "offset").collect()
    assert len(rows) == env.expected.bronze
    coords = Counter((r.topic, r.partition, r.offset) for r in rows)
    assert max(coords.values()) == 1
    # offsets are dense per partition: nothing skipped
    by_partition: dict[tuple[str, int], list[int]] = {}
    for topic, part, off in coords:
        by_partition.setdefault((topic, part), []).append(off)
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(min(offsets), min(offsets) + len(offsets)))


def test_bronze_keeps_payloads_untouched(round2: Env) -> None:
    env = round2
    row = (
        env.spark.table(env.table(BRONZE))
        .where("avro_payload IS NOT NULL AND length(avro_payload) > 20")
        .orderBy("topic", "partition", "offset")
        .first()
    )
    assert row is not None
    payload = bytes(row.avro_payload)
    assert (
        payload[0] == 0 and int.from_bytes(payload[1:5], "big") in env.producer.schema_ids.values()
    )
    assert row.ingestion_date == row.ingestion_timestamp.date()


def test_every_bronze_row_is_in_silver_or_the_dlq(round2: Env) -> None:
    env = round2
    silver_counts = {s.name: env.count(s) for s in SILVERS}
    dlq = env.count(DLQ)
    assert sum(silver_counts.values()) + dlq == env.count(BRONZE)
    assert silver_counts == {
        "silver_binance_trades": env.expected.silver["BINANCE"],
        "silver_kraken_trades": env.expected.silver["KRAKEN"],
    }


def test_dlq_rows_carry_the_right_reasons(round2: Env) -> None:
    env = round2
    rows = env.spark.table(env.table(DLQ)).collect()
    assert Counter(r.error_type for r in rows) == env.expected.dlq
    for r in rows:
        assert r.error_reason and r.error_timestamp is not None
        assert r.topic in env.pipeline.topics()
    unknown = [r for r in rows if r.error_type == ErrorType.UNKNOWN_SCHEMA_ID]
    assert unknown and all("schema id 987654" in r.error_reason for r in unknown)
    tombstones = [r for r in rows if r.avro_payload is None]
    assert len(tombstones) == 2 and all(r.error_reason == "payload is null" for r in tombstones)


def test_silver_rows_are_decoded_exactly(round2: Env) -> None:
    env = round2
    row = env.spark.table(env.table(SILVERS[0])).where("message_id = 'BINANCE:BTCUSDT:7'").first()
    assert row is not None
    ts = env.now - dt.timedelta(seconds=30) + dt.timedelta(milliseconds=7)
    want = testdata.trade("BINANCE", 7, ts)
    assert row.price == want["price"] and row.quantity == want["quantity"]
    assert row.symbol == "BTC/USDT" and row.side == want["side"] and row.exchange == "BINANCE"
    assert row.vendor_data == {"native_symbol": "BTCUSDT"}
    assert row.exchange_date == want["timestamp"].date()


def test_gold_has_each_message_id_exactly_once(round2: Env) -> None:
    env = round2
    rows = (
        env.spark.table(env.table(GOLD))
        .select("message_id", "exchange_date", "exchange_hour")
        .collect()
    )
    ids = Counter(r.message_id for r in rows)
    assert max(ids.values()) == 1
    assert set(ids) == set(env.expected.gold)
    for r in rows:
        ts = env.expected.gold[r.message_id]
        assert (r.exchange_date, r.exchange_hour) == (ts.date(), ts.hour)


def test_gold_hourly_partitions_exist(round2: Env) -> None:
    env = round2
    parts = {
        (r.partition.exchange_date, r.partition.exchange_hour)
        for r in env.spark.sql(f"SELECT partition FROM {env.table(GOLD)}.partitions").collect()
    }
    assert parts == {(ts.date(), ts.hour) for ts in env.expected.gold.values()}
    assert len(parts) >= 3  # now, three hours ago, two days ago


@pytest.mark.usefixtures("round2")
def test_table_layouts_match_the_specs(catalog: dict[str, Any]) -> None:
    cat = load_catalog(catalog["uri"], catalog["warehouse"])
    for spec in ALL_TABLES:
        ns_spec = replace(spec, namespace=NAMESPACE)
        assert iceberg_ddl.plan_in(cat, ns_spec) == [], spec.name
        table = cat.load_table(ns_spec.identifier)
        assert table.properties["write.parquet.compression-codec"] == "zstd"
        files = table.inspect.files().to_pylist()
        assert files, spec.name
        for f in files:
            path = f["file_path"].removeprefix("file:")
            meta = pq.ParquetFile(path).metadata
            assert meta.row_group(0).column(0).compression == "ZSTD", (spec.name, path)
            if spec is GOLD:
                assert f["sort_order_id"] == table.sort_order().order_id != 0
    gold_files = cat.load_table(f"{NAMESPACE}.{GOLD.name}").inspect.files().to_pylist()
    for f in gold_files:  # sorted by (timestamp, trade_id) within every file
        t = pq.ParquetFile(f["file_path"].removeprefix("file:")).read(
            columns=["timestamp", "trade_id"]
        )
        keys = list(
            zip(t.column("timestamp").to_pylist(), t.column("trade_id").to_pylist(), strict=True)
        )
        assert keys == sorted(keys)


def _drop_last_commit(checkpoint: str) -> int:
    commits = sorted((Path(checkpoint) / "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    last = commits[-1]
    last.unlink()
    crc = last.parent / f".{last.name}.crc"
    crc.unlink(missing_ok=True)
    return int(last.name)


def test_replaying_the_last_batch_changes_nothing(round2: Env) -> None:
    """As after a crash between the sink's commit and the checkpoint's: Spark runs the last
    batch again; bronze's Iceberg sink and silver's batch ids skip it, gold's MERGE finds
    every id already there."""
    env = round2
    before = {s.name: env.count(s) for s in ALL_TABLES}
    snapshots_before = {
        s.name: env.spark.sql(f"SELECT count(*) AS n FROM {env.table(s)}.snapshots").first().n  # type: ignore[union-attr]
        for s in ALL_TABLES
    }
    for layer in ("bronze", "silver", "gold"):
        _drop_last_commit(env.pipeline.checkpoint(layer))
    run_all(env)
    assert {s.name: env.count(s) for s in ALL_TABLES} == before
    snapshots_after = {
        s.name: env.spark.sql(f"SELECT count(*) AS n FROM {env.table(s)}.snapshots").first().n  # type: ignore[union-attr]
        for s in ALL_TABLES
    }
    # bronze and silver skip the replayed batch without committing anything
    for spec in (BRONZE, *SILVERS, DLQ):
        assert snapshots_after[spec.name] == snapshots_before[spec.name], spec.name


def test_a_fresh_checkpoint_after_reset_rereads_kafka_but_gold_stays_unique(round2: Env) -> None:
    """A reset gold checkpoint re-reads every silver row; the MERGE still keeps each
    message_id once."""
    env = round2
    gold_before = env.count(GOLD)
    shutil.rmtree(env.pipeline.checkpoint("gold"))
    run_query(env.spark, env.pipeline, JobOptions(available_now=True), gold.start)
    assert env.count(GOLD) == gold_before


def test_a_batch_half_committed_is_completed_not_duplicated(round2: Env) -> None:
    """A crash between silver's per-table appends: the Kraken silver table and the DLQ lose
    the last batch (rolled back), the Binance table keeps it. On replay, silver writes the
    batch to the two tables that miss it and skips the one that has it."""
    env = round2
    before = {s.name: env.count(s) for s in (*SILVERS, DLQ)}
    for spec in (SILVERS[1], DLQ):
        name = env.table(spec)
        last = env.spark.sql(
            f"SELECT parent_id FROM {name}.snapshots ORDER BY committed_at DESC LIMIT 1"
        ).first()
        assert last is not None and last.parent_id is not None
        ident = f"{env.pipeline.namespace}.{spec.name}"
        env.spark.sql(f"CALL k2.system.rollback_to_snapshot('{ident}', {last.parent_id})")
    assert env.count(SILVERS[1]) < before[SILVERS[1].name]
    _drop_last_commit(env.pipeline.checkpoint("silver"))
    binance_snapshots = env.spark.sql(
        f"SELECT count(*) AS n FROM {env.table(SILVERS[0])}.snapshots"
    ).first()
    run_query(env.spark, env.pipeline, JobOptions(available_now=True), silver.start)
    assert {s.name: env.count(s) for s in (*SILVERS, DLQ)} == before
    after = env.spark.sql(f"SELECT count(*) AS n FROM {env.table(SILVERS[0])}.snapshots").first()
    assert after == binance_snapshots
