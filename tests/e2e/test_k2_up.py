"""`k2 up` end to end: replayed exchanges with injected faults, a crash, a resume.

Run 1 streams with malformed frames, price-0 trades and a dropped connection, then is
killed with SIGKILL (jobs included). Before run 2, some records are re-sent to Kafka
verbatim (late duplicates). Run 2 resumes from the same directory and drains on stop.
Then every layer is reconciled against what Kafka holds, exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k2.contracts import tables
from k2.contracts.topics import DEAD_LETTER_TOPIC

pytestmark = [pytest.mark.e2e]

RATE = 40.0  # trades/s per exchange
RESENDS_PER_TOPIC = 25


def k2_up(run_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    with (run_dir.parent / f"k2-up-{time.time_ns()}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "k2.cli",
                "up",
                "--dir",
                str(run_dir),
                "--quiet",
                "--inject-faults",
                "--rate",
                str(RATE),
                "--json-status",
                str(run_dir.parent / "status.jsonl"),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def last_status(run_dir: Path) -> dict[str, Any]:
    lines = (run_dir.parent / "status.jsonl").read_text().splitlines()
    return dict(json.loads(lines[-1])) if lines else {}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def gold_rows(run_dir: Path) -> int:
    status = last_status(run_dir)
    return next(layer["rows"] for layer in status["layers"] if layer["table"] == tables.GOLD.name)


def recorded_group(pid_file: Path) -> int | None:
    """The process group of a child k2 up recorded in `pid_file` (its own session), or None:
    unreadable, or the pid now belongs to another program. A leader that is gone (or a zombie)
    still names its group: an id in use as a process group id is not handed out again."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if not cmdline or b"k2.cli" in cmdline else None


def kill_children(run_dir: Path, names: str = "*") -> None:
    """SIGKILL the process groups of k2 up's children named `names` (run_dir/procs/NAME/NAME.pid)."""
    for pid_file in (run_dir / "procs").glob(f"{names}/*.pid"):
        group = recorded_group(pid_file)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def kill_all(run_dir: Path, up: subprocess.Popen[bytes]) -> None:
    """SIGKILL k2 up and its Spark jobs mid-stream (ingestors/replays die with the next run)."""
    os.killpg(up.pid, signal.SIGKILL)
    up.wait()
    kill_children(run_dir, "job-*")


class UpRuns:
    """The `k2 up` runs of one directory, and everything they started: `stop_all` stops it all,
    whatever state a failed test left it in."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        proc = k2_up(self.dir, *extra)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """k2 up (its process group), its children (their pid files), then its stack."""
        from k2.stack.stack import Stack

        for proc in self.procs:
            if proc.poll() is None:  # not reaped: the pid, and its group, are still that run's
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        kill_children(self.dir)
        Stack(self.dir / "stack").down()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpRuns]:
    runs = UpRuns(tmp_path / "up")
    try:
        yield runs
    finally:
        runs.stop_all()


def topic_records(bootstrap: str, topic: str) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {p.partition: c.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        c.assign(parts)
        out: list[Any] = []
        remaining = sum(ends.values())
        while remaining > 0:
            msg = c.poll(5)
            if msg is None:
                break
            if msg.error() is None:
                out.append(msg)
                remaining -= 1
        return out
    finally:
        c.close()


def resend(bootstrap: str, topic: str, n: int) -> int:
    from confluent_kafka import Producer

    msgs = topic_records(bootstrap, topic)[:n]
    p = Producer({"bootstrap.servers": bootstrap})
    for m in msgs:
        p.produce(topic, key=m.key(), value=m.value())
    assert p.flush(30) == 0
    return len(msgs)


def test_k2_up_streams_recovers_and_reconciles(up: UpRuns) -> None:
    from k2.catalog import load_catalog
    from k2.contracts.serde import TradeDeserializer
    from k2.stack.stack import Stack

    run_dir = up.dir
    first = up.start("--duration", "900")
    try:
        wait_for(lambda: gold_rows(run_dir) > 0, 420, "gold rows in run 1")
        time.sleep(10)  # let it stream a little past the first gold commit
    finally:
        kill_all(run_dir, first)

    stack = Stack(run_dir / "stack")
    endpoints = stack.up(["kafka", "registry", "catalog"])
    bootstrap = endpoints["kafka"]["bootstrap_servers"]
    resent = {
        t: resend(bootstrap, t, RESENDS_PER_TOPIC)
        for t in ("market.crypto.trades.binance", "market.crypto.trades.kraken")
    }
    assert all(n == RESENDS_PER_TOPIC for n in resent.values())

    second = up.start("--duration", "45", "--drain")
    assert second.wait(timeout=900) == 0

    endpoints = stack.up(["kafka", "registry", "catalog"])  # stopped by the fixture
    bootstrap = endpoints["kafka"]["bootstrap_servers"]
    from confluent_kafka.schema_registry import SchemaRegistryClient

    deser = TradeDeserializer(SchemaRegistryClient({"url": endpoints["registry"]["url"]}))
    kafka_msgs: list[Any] = []
    for topic in ("market.crypto.trades.binance", "market.crypto.trades.kraken"):
        kafka_msgs += topic_records(bootstrap, topic)
    decoded = [deser(m.value()) for m in kafka_msgs]
    invalid_ids = [t["message_id"] for t in decoded if t["price"] <= 0]
    valid_ids = {t["message_id"] for t in decoded if t["price"] > 0}

    cat = load_catalog(endpoints["catalog"]["uri"], endpoints["catalog"]["warehouse"])

    def scan(spec: tables.TableSpec, *cols: str) -> Any:
        return cat.load_table(spec.identifier).scan(selected_fields=cols).to_arrow()

    bronze = scan(tables.BRONZE, "topic", "partition", "offset")
    keys = list(
        zip(
            bronze["topic"].to_pylist(),
            bronze["partition"].to_pylist(),
            bronze["offset"].to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)), "bronze holds a Kafka record twice"
    assert len(bronze) == len(kafka_msgs), "bronze does not hold every Kafka record exactly once"

    silver = {s.name: scan(s, "message_id", "exchange") for s in tables.SILVERS}
    dlq = scan(tables.DLQ, "error_type", "error_reason", "avro_payload")
    assert sum(len(t) for t in silver.values()) + len(dlq) == len(bronze), "bronze != silver + DLQ"
    assert len(dlq) == len(invalid_ids) > 0, "the DLQ must hold exactly the injected price-0 trades"
    assert all("price" in r for r in dlq["error_reason"].to_pylist())

    gold = scan(tables.GOLD, "message_id", "exchange", "exchange_hour")
    ids = gold["message_id"].to_pylist()
    assert len(ids) == len(set(ids)), "gold holds a message_id twice"
    assert set(ids) == valid_ids
    assert set(gold["exchange"].to_pylist()) == {"BINANCE", "KRAKEN"}
    assert Counter(ids).most_common(1)[0][1] == 1

    dead = topic_records(bootstrap, DEAD_LETTER_TOPIC)
    # 2 malformed frames per replay server per run; 2 exchanges; 2 runs.
    assert len(dead) == 8
