"""`k2 bench latency`: per-layer latency, Kafka timestamp -> row visible in bronze, silver, gold.

A producer sends trade v3 for both exchanges at a steady rate (default 1,000 trades/s)
for a fixed time (default 90 s; --quick 30 s), each with an explicit Kafka timestamp
(CreateTime) that is also remembered per message_id. The three jobs run meanwhile as
three streaming queries of one local Spark driver (FAIR scheduling), with the
declaration's default triggers unless --latency-triggers says otherwise.

A row is visible when the Iceberg snapshot that added its data file is committed, so
after the run each row's visibility time is read from the tables' own metadata (the
`_file` metadata column joined with the `entries` and `snapshots` metadata tables): no
polling error. Latency = commit time - Kafka timestamp, as p50/p90/p99/max per layer,
for all rows and for the rows sent after the warm-up (the first 20 s, JIT and first
batches). Targets: silver p99 < 30 s, gold p99 < 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

TARGETS_P99_S = {"silver": 30.0, "gold": 60.0}


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="producing time (default 90; --quick 30)",
    )
    group.add_argument(
        "--latency-rate", type=float, default=1000.0, help="trades/s, both exchanges together"
    )
    group.add_argument(
        "--latency-triggers",
        default=None,
        help="e.g. 'bronze=2 seconds,silver=5 seconds,gold=10 seconds' (default: the declaration defaults)",
    )
    group.add_argument(
        "--latency-warmup", type=float, default=20.0, help="seconds excluded as warm-up"
    )
    group.add_argument(
        "--latency-stack-dir",
        type=Path,
        default=None,
        help="use the services of this running stack",
    )


def parse_triggers(text: str | None) -> dict[str, str]:
    from k2.pipeline import DEFAULT_TRIGGERS

    out = dict(DEFAULT_TRIGGERS)
    for part in (text or "").split(","):
        if part.strip():
            layer, _, value = part.partition("=")
            out[layer.strip()] = value.strip()
    return out


class SteadyProducer:
    """Trade v3 at `rate`/s (alternating exchanges) with explicit Kafka timestamps."""

    def __init__(self, producer: Any, rate: float, seconds: float) -> None:
        self.producer, self.rate, self.seconds = producer, rate, seconds
        self.sent_ms: dict[str, int] = {}
        self.started = 0.0
        self.elapsed = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from k2_jobs import testdata

        exchanges = list(self.producer.topics)
        self.started = time.monotonic()
        n = 0
        while True:
            elapsed = time.monotonic() - self.started
            if elapsed >= self.seconds or self.stop.is_set():
                break
            due = int(elapsed * self.rate) + 1
            while n < due:
                exchange = exchanges[n % len(exchanges)]
                now_ms = int(time.time() * 1000)
                t = testdata.trade(exchange, n, dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC))
                self.producer.send(self.producer.topic(exchange), t, timestamp_ms=now_ms)
                self.sent_ms[t["message_id"]] = now_ms
                n += 1
            time.sleep(0.002)
        self.producer.flush()
        self.elapsed = time.monotonic() - self.started


def visibility(spark: Any, table: str, key: str) -> list[tuple[Any, int]]:
    """(key value, commit time in ms of the snapshot that made the row visible) per row."""
    rows = spark.sql(
        f"SELECT t.k AS k, unix_millis(s.committed_at) AS v "  # noqa: S608 - our own table names
        f"FROM (SELECT {key} AS k, _file FROM {table}) t "
        f"JOIN (SELECT data_file.file_path AS f, snapshot_id FROM {table}.entries WHERE status <> 2) e "
        "ON t._file = e.f "
        f"JOIN {table}.snapshots s ON e.snapshot_id = s.snapshot_id"
    ).collect()
    return [(r.k, int(r.v)) for r in rows]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from k2.contracts.tables import BRONZE, GOLD, SILVERS
    from k2_jobs import bronze, gold, silver, testdata
    from k2_jobs.benchkit import (
        BatchAudit,
        MemorySampler,
        bench_workspace,
        percentiles,
        say,
        wait_for,
    )
    from k2_jobs.common import JobOptions, session, table_name

    seconds = args.latency_seconds or (30.0 if args.quick else 90.0)
    triggers = parse_triggers(args.latency_triggers)
    with bench_workspace(
        "latency",
        ["kafka", "registry", "catalog"],
        stack_dir=args.latency_stack_dir,
        triggers=triggers,
        spark_conf={"spark.scheduler.mode": "FAIR"},
    ) as ws:
        p = ws.pipeline
        producer = testdata.Producer(
            p.kafka_bootstrap, p.schema_registry_url, topics=ws.topics, **{"linger.ms": 5}
        )
        with MemorySampler() as mem:
            spark = session(p, "latency")
            audit = BatchAudit().attach(spark)
            options = JobOptions()
            queries = [job.start(spark, p, options) for job in (bronze, silver, gold)]
            say(
                f"jobs started (triggers {triggers}); producing {args.latency_rate:.0f} trades/s for {seconds:.0f}s…"
            )
            feed = SteadyProducer(producer, args.latency_rate, seconds)
            feed.thread.start()
            feed.thread.join()
            expected = len(feed.sent_ms)
            gold_table = table_name(p, GOLD)

            def caught_up() -> bool:
                spark.sql(f"REFRESH TABLE {gold_table}")
                return bool(spark.table(gold_table).count() >= expected)

            done = wait_for(caught_up, timeout=180, interval=2)
            failures = [str(q.exception()) for q in queries if q.exception() is not None]
            progress = {q.name: list(q.recentProgress) for q in queries}
            for q in queries:
                q.stop()
            batch_audit = audit.result()
        say("reading visibility times from the tables' metadata…")
        warm_ms = min(feed.sent_ms.values(), default=0) + int(args.latency_warmup * 1000)
        results: dict[str, Any] = {}
        b_table = table_name(p, BRONZE)
        spark.sql(f"REFRESH TABLE {b_table}")
        bronze_rows = spark.sql(
            "SELECT unix_millis(kafka_timestamp) AS k, v FROM ("  # noqa: S608
            f"SELECT t.kafka_timestamp, unix_millis(s.committed_at) AS v FROM (SELECT kafka_timestamp, _file FROM {b_table}) t "
            f"JOIN (SELECT data_file.file_path AS f, snapshot_id FROM {b_table}.entries WHERE status <> 2) e ON t._file = e.f "
            f"JOIN {b_table}.snapshots s ON e.snapshot_id = s.snapshot_id)"
        ).collect()
        per_layer: dict[str, list[tuple[int, int]]] = {
            "bronze": [(int(r.k), int(r.v)) for r in bronze_rows]
        }
        silver_rows: list[tuple[int, int]] = []
        for spec in SILVERS:
            name = table_name(p, spec)
            spark.sql(f"REFRESH TABLE {name}")
            silver_rows += [
                (feed.sent_ms[k], v)
                for k, v in visibility(spark, name, "message_id")
                if k in feed.sent_ms
            ]
        per_layer["silver"] = silver_rows
        spark.sql(f"REFRESH TABLE {gold_table}")
        per_layer["gold"] = [
            (feed.sent_ms[k], v)
            for k, v in visibility(spark, gold_table, "message_id")
            if k in feed.sent_ms
        ]
        for layer, pairs in per_layer.items():
            lat = [(v - sent) / 1000 for sent, v in pairs]
            steady = [(v - sent) / 1000 for sent, v in pairs if sent >= warm_ms]
            results[layer] = {
                "rows": len(pairs),
                "latency_s": percentiles(lat),
                "latency_s_after_warmup": percentiles(steady),
            }
        batches = {}
        for name, prs in progress.items():
            durations = [
                pr.durationMs.get("triggerExecution", 0) / 1000 for pr in prs if pr.numInputRows
            ]
            batches[name] = percentiles(durations) | {"batches_with_data": len(durations)}
        spark.stop()
        p99 = {k: results[k]["latency_s_after_warmup"].get("p99") for k in ("silver", "gold")}
        return {
            "rate_target": args.latency_rate,
            "rate_achieved": round(expected / feed.elapsed, 1) if feed.elapsed else None,
            "seconds": seconds,
            "trades": expected,
            "triggers": triggers,
            "caught_up": done,
            "query_failures": failures,
            "layers": results,
            "batch_seconds": batches,
            "memory": mem.result(),
            # the listener and q.exception() see the same failures (the listener a bit later)
            "failed_batches": max(batch_audit["failed"], len(failures)),
            "batch_audit": batch_audit,
            "targets_p99_s": TARGETS_P99_S,
            "meets_memory_target": mem.within_limit(),
            "meets_targets": done
            and max(batch_audit["failed"], len(failures)) == 0
            and all(p99[k] is not None and p99[k] < TARGETS_P99_S[k] for k in TARGETS_P99_S),
        }
