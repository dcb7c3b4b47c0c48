"""`k2 bench bronze`: sustained rows/s of the bronze job, Kafka -> Iceberg, from a pre-filled topic.

Both exchange topics are filled with trade v3 records (Confluent framing, ~150 bytes each),
then, in the same run:

1. a plain confluent-kafka consumer loop reads every record once (the raw consume rate:
   what this machine's Kafka + one Python consumer can deliver, the ceiling to compare with);
2. the bronze job (`k2_jobs.bronze`, local Spark) reads them all with an availableNow trigger
   and `maxOffsetsPerTrigger` batches, writing bronze_crypto_trades in a fresh namespace.

Reported: bronze rows/s over the whole query (start to last commit) and over the batches'
own execution time, the ratio to the raw consume rate, the batches, the peak memory of the
driver (Python + JVM, psutil) and a row-count check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

TARGET_ROWS_PER_S = 10_000


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--bronze-records",
        type=int,
        default=None,
        help="records to pre-fill (default 1,000,000; --quick 100,000)",
    )
    group.add_argument(
        "--bronze-max-per-trigger",
        type=int,
        default=250_000,
        help="maxOffsetsPerTrigger of the bronze job",
    )
    group.add_argument(
        "--bronze-stack-dir",
        type=Path,
        default=None,
        help="use the Kafka and catalog of this running stack",
    )


def fill_topics(
    bootstrap: str, topics: dict[str, str], records: int, partitions: int
) -> dict[str, Any]:
    """Produce `records` trade v3 records, split over the exchanges' topics and partitions."""
    from confluent_kafka import Producer

    from k2.contracts.serde import TradeSerializer
    from k2_jobs import testdata

    now = dt.datetime.now(dt.UTC)
    payloads: dict[str, list[bytes]] = {}
    for exchange in topics:
        ser = TradeSerializer(schema_id=1)
        payloads[exchange] = [ser(testdata.trade(exchange, n, now)) for n in range(1024)]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    started = time.monotonic()
    exchanges = list(topics)
    total_bytes = 0
    for i in range(records):
        exchange = exchanges[i % len(exchanges)]
        value = payloads[exchange][(i // len(exchanges)) % 1024]
        total_bytes += len(value)
        while True:
            try:
                producer.produce(topics[exchange], value, b"BTC", partition=(i // 2) % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records not delivered")
    seconds = time.monotonic() - started
    return {
        "records": records,
        "avg_record_bytes": round(total_bytes / max(records, 1), 1),
        "produce_seconds": round(seconds, 2),
        "produce_rows_per_s": round(records / seconds),
    }


def raw_consume(bootstrap: str, topics: list[str], partitions: int, records: int) -> dict[str, Any]:
    """A plain confluent-kafka loop (consume() in batches of 10k) over every record once."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"k2-bench-raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)]
    )
    n, nbytes = 0, 0
    started = time.monotonic()
    deadline = started + 600
    try:
        while n < records and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=1.0):
                if m.error() is None:
                    n += 1
                    nbytes += len(m.value() or b"")
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    return {
        "records": n,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n / seconds),
        "mb_per_s": round(nbytes / seconds / 2**20, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from k2.contracts.tables import BRONZE
    from k2_jobs import bronze
    from k2_jobs.benchkit import BatchAudit, MemorySampler, bench_workspace, say
    from k2_jobs.common import JobOptions, await_query, session, table_name

    records = args.bronze_records or (100_000 if args.quick else 1_000_000)
    partitions = 2
    with bench_workspace(
        "bronze",
        ["kafka", "catalog"],
        stack_dir=args.bronze_stack_dir,
        partitions=partitions,
        max_per_trigger={"bronze": args.bronze_max_per_trigger},
    ) as ws:
        p = ws.pipeline
        say(f"filling {len(ws.topics)} topics x {partitions} partitions with {records:,} records…")
        filled = fill_topics(p.kafka_bootstrap, ws.topics, records, partitions)
        say(f"raw confluent-kafka consume of {records:,} records…")
        raw = raw_consume(p.kafka_bootstrap, list(ws.topics.values()), partitions, records)
        say(f"raw consume: {raw['rows_per_s']:,} rows/s")
        with MemorySampler() as mem:
            spark = session(p, "bronze")
            audit = BatchAudit().attach(spark)
            say("bronze job (availableNow)…")
            options = JobOptions(available_now=True)
            started = time.monotonic()
            query = bronze.start(spark, p, options)
            await_query(query, options)
            seconds = time.monotonic() - started
            progress = [pr for pr in query.recentProgress if pr.numInputRows]
        written = spark.table(table_name(p, BRONZE)).count()
        batches = [
            {
                "rows": pr.numInputRows,
                "seconds": round(pr.durationMs.get("triggerExecution", 0) / 1000, 2),
                "rows_per_s": round(pr.processedRowsPerSecond),
            }
            for pr in progress
        ]
        exec_seconds = sum(b["seconds"] for b in batches) or seconds
        rate = records / seconds
        # sustained: the batches after the first (which pays for JIT and Kafka consumers)
        later = batches[1:]
        sustained = (
            sum(b["rows"] for b in later) / sum(b["seconds"] for b in later)
            if later and sum(b["seconds"] for b in later)
            else rate
        )
        batch_audit = audit.result()
        spark.stop()
        say(
            f"bronze: {sustained:,.0f} rows/s sustained, {rate:,.0f} end to end ({len(batches)} batches)"
        )
        return {
            "records": records,
            "fill": filled,
            "raw_consume": raw,
            "bronze": {
                "rows_written": written,
                "seconds": round(seconds, 2),
                "rows_per_s_sustained": round(sustained),
                "rows_per_s_end_to_end": round(rate),
                "rows_per_s_batch_execution": round(records / exec_seconds),
                "ratio_to_raw_consume": round(sustained / raw["rows_per_s"], 3)
                if raw["rows_per_s"]
                else None,
                "ratio_to_raw_consume_end_to_end": round(rate / raw["rows_per_s"], 3)
                if raw["rows_per_s"]
                else None,
                "max_offsets_per_trigger": args.bronze_max_per_trigger,
                "batches": batches,
                "master": spark_master(p),
            },
            "memory": mem.result(),
            "failed_batches": batch_audit["failed"],
            "batch_audit": batch_audit,
            "target_rows_per_s": TARGET_ROWS_PER_S,
            "meets_memory_target": mem.within_limit(),
            "meets_target": sustained >= TARGET_ROWS_PER_S
            and written == records
            and batch_audit["failed"] == 0,
        }


def spark_master(pipeline: Any) -> str:
    from k2_jobs.common import local_cores

    return f"local[{local_cores(pipeline)}]"
