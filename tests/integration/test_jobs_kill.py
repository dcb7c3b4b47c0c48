"""SIGKILL each job mid-stream (a `k2 job ...` subprocess), restart it from its checkpoint:
no row lost, none duplicated, in any layer.

Bronze is killed while trades are still arriving; silver and gold are killed part-way
through a backlog they read a few hundred rows at a time. Each restart runs in this
process with an availableNow trigger, from the same checkpoint, until it has caught up.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from k2.contracts.tables import BRONZE, DLQ, GOLD, SILVERS, TableSpec
from k2.pipeline import Pipeline
from k2_jobs import bronze, gold, silver, testdata
from k2_jobs.common import JobOptions, run_query

pytestmark = pytest.mark.integration

NAMESPACE = "k2_it_kill"
UTC = dt.UTC
INVALID_EVERY = 25  # every 25th trade has price 0 -> DLQ


@dataclass
class Env:
    path: Path
    pipeline: Pipeline
    producer: testdata.Producer
    spark: SparkSession
    tmp: Path
    valid_ids: set[str]

    def table(self, spec: TableSpec) -> str:
        name = f"k2.{NAMESPACE}.{spec.name}"
        self.spark.sql(f"REFRESH TABLE {name}")
        return name

    def count(self, spec: TableSpec) -> int:
        return int(self.spark.table(self.table(spec)).count())


@pytest.fixture(scope="module")
def env(make_pipeline: Callable[..., Any], spark: SparkSession) -> Env:
    p = make_pipeline(
        "kill",
        NAMESPACE,
        triggers={"bronze": "1 second", "silver": "1 second", "gold": "1 second"},
        max_per_trigger={"bronze": 400, "silver": 300, "gold": 300},
    )
    return Env(p.path, p.pipeline, p.producer, spark, p.tmp, set())


class Feeder:
    """Sends trades of both exchanges (some invalid) at about `rate`/s until stopped."""

    def __init__(self, env: Env, rate: float, start: int = 0) -> None:
        self.env, self.rate, self.n = env, rate, start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        env, t0 = self.env, time.monotonic()
        while not self._stop.is_set():
            now = dt.datetime.now(UTC)
            for exchange in ("BINANCE", "KRAKEN"):
                bad = self.n % INVALID_EVERY == 0
                t = testdata.trade(exchange, self.n, now, **({"price": Decimal(0)} if bad else {}))
                env.producer.send(env.producer.topic(exchange), t)
                if not bad:
                    env.valid_ids.add(t["message_id"])
            self.n += 1
            ahead = self.n * 2 / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.env.producer.flush()


def spawn(env: Env, layer: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = env.tmp / f"{layer}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "k2.cli",
                "job",
                layer,
                "-f",
                str(env.path),
                "--master",
                "local[1]",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, log


def commits(env: Env, layer: str) -> int:
    d = Path(env.pipeline.checkpoint(layer)) / "commits"
    return len(list(d.glob("[0-9]*"))) if d.is_dir() else 0


def kill_after_commits(
    env: Env, layer: str, n: int, *, linger: float = 0.7, timeout: float = 300.0
) -> int:
    """Run `k2 job LAYER` until its checkpoint holds n more commits, then SIGKILL its
    whole process group (Python driver and JVM at once); return the commits seen."""
    before = commits(env, layer)
    proc, log = spawn(env, layer)
    deadline = time.monotonic() + timeout
    try:
        while commits(env, layer) < before + n:
            if proc.poll() is not None:
                raise AssertionError(f"k2 job {layer} exited early:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"k2 job {layer}: no {n} commits in {timeout}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        time.sleep(linger)  # land somewhere inside the next micro-batch
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return commits(env, layer) - before


def restart(env: Env, job: Any, max_per_trigger: int = 1_000_000) -> None:
    """Catch up from the killed job's checkpoint, in bigger batches."""
    run_query(
        env.spark,
        env.pipeline,
        JobOptions(available_now=True, max_per_trigger=max_per_trigger),
        job.start,
    )


def test_bronze_killed_mid_stream_loses_and_duplicates_nothing(env: Env) -> None:
    with Feeder(env, rate=200):
        seen = kill_after_commits(env, "bronze", 2)
        time.sleep(1)
    assert seen >= 2
    assert env.count(BRONZE) < env.producer.sent  # killed mid-stream
    # smallish batches, so that silver and gold (next tests) have many files to go through
    restart(env, bronze, max_per_trigger=1_500)
    rows = env.spark.table(env.table(BRONZE)).select("topic", "partition", "offset").collect()
    coords = Counter((r.topic, r.partition, r.offset) for r in rows)
    assert len(rows) == env.producer.sent
    assert max(coords.values()) == 1


def test_silver_killed_mid_stream_loses_and_duplicates_nothing(env: Env) -> None:
    seen = kill_after_commits(env, "silver", 2)
    assert seen >= 2
    assert sum(env.count(s) for s in (*SILVERS, DLQ)) < env.count(BRONZE)  # killed mid-stream
    restart(env, silver, max_per_trigger=1_500)
    silver_ids: Counter[str] = Counter()
    for spec in SILVERS:
        silver_ids.update(
            r.message_id for r in env.spark.table(env.table(spec)).select("message_id").collect()
        )
    dlq = (
        env.spark.table(env.table(DLQ))
        .select("topic", "partition", "offset", "error_type")
        .collect()
    )
    assert max(silver_ids.values()) == 1
    assert set(silver_ids) == env.valid_ids
    assert max(Counter((r.topic, r.partition, r.offset) for r in dlq).values()) == 1
    assert {r.error_type for r in dlq} == {"INVALID_PRICE"}
    assert sum(silver_ids.values()) + len(dlq) == env.count(BRONZE)


def test_gold_killed_mid_stream_loses_and_duplicates_nothing(env: Env) -> None:
    seen = kill_after_commits(env, "gold", 1, linger=0.0)
    assert seen >= 1
    assert env.count(GOLD) < len(env.valid_ids)  # killed mid-stream
    restart(env, gold)
    ids = Counter(
        r.message_id for r in env.spark.table(env.table(GOLD)).select("message_id").collect()
    )
    assert max(ids.values()) == 1
    assert set(ids) == env.valid_ids
