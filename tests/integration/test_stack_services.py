"""Each local service does its job, through the clients the pipeline uses."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from k2.stack.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_MESSAGES = 1000


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _produce(bootstrap: str, topic: str, n: int, partitions: int = 2) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for i in range(n):
        producer.produce(topic, key=str(i % 17).encode(), value=json.dumps({"i": i}).encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def test_kafka_produce_consume(kafka: dict[str, Any]) -> None:
    from confluent_kafka import Consumer

    topic = _unique("k2_test_roundtrip")
    _produce(kafka["bootstrap_servers"], topic, N_MESSAGES)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka["bootstrap_servers"],
            "group.id": _unique("k2-test"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(seen) < N_MESSAGES and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                assert msg.error() is None, msg.error()
                seen.add(json.loads(msg.value() or b"")["i"])
    finally:
        consumer.close()
    assert seen == set(range(N_MESSAGES))


def test_kafka_auto_creates_topics(kafka: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    topic = _unique("k2_test_auto")
    producer = Producer({"bootstrap.servers": kafka["bootstrap_servers"]})
    producer.produce(topic, value=b"x")
    assert producer.flush(30) == 0


def test_registry_register_and_fetch_by_id(registry: dict[str, Any]) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    import k2.contracts

    avsc = (Path(k2.contracts.__file__).parent / "trade_v3.avsc").read_text()
    client = SchemaRegistryClient({"url": registry["url"]})
    subject = f"{_unique('k2-test')}-value"
    schema_id = client.register_schema(subject, Schema(avsc, "AVRO"))
    assert client.register_schema(subject, Schema(avsc, "AVRO")) == schema_id  # idempotent

    fresh = SchemaRegistryClient({"url": registry["url"]})  # no client-side cache
    fetched = fresh.get_schema(schema_id)
    assert fetched.schema_type == "AVRO"
    assert json.loads(fetched.schema_str or "") == json.loads(avsc)
    latest = fresh.get_latest_version(subject)
    assert latest.schema_id == schema_id and latest.version == 1
    assert subject in fresh.get_subjects()


def test_registry_avro_serde_wire_format(registry: dict[str, Any]) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = json.dumps(
        {
            "type": "record",
            "name": "Ping",
            "namespace": "com.k2.test",
            "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}],
        }
    )
    client = SchemaRegistryClient({"url": registry["url"]})
    topic = _unique("k2_test_serde")
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = AvroSerializer(client, schema)({"n": 42, "s": "hi"}, ctx)
    assert payload is not None and payload[0] == 0  # Confluent wire format: magic byte 0
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_schema(schema_id).schema_str
    fresh = SchemaRegistryClient({"url": registry["url"]})
    assert AvroDeserializer(fresh)(payload, ctx) == {"n": 42, "s": "hi"}


def test_catalog_pyiceberg_write_spark_read(catalog: dict[str, Any], spark: SparkSession) -> None:
    import pyarrow as pa
    from pyiceberg.catalog import load_catalog

    cat = load_catalog("k2", type="rest", uri=catalog["uri"], warehouse=catalog["warehouse"])
    namespace = _unique("k2_test")
    cat.create_namespace(namespace)
    arrow_schema = pa.schema(
        [
            pa.field("trade_id", pa.int64(), nullable=False),
            pa.field("symbol", pa.string()),
            pa.field("price", pa.decimal128(18, 8)),
            pa.field("ts", pa.timestamp("us", tz="UTC")),
        ]
    )
    table = cat.create_table(f"{namespace}.trades", schema=arrow_schema)
    t0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    rows = [
        {
            "trade_id": i,
            "symbol": "BTC/USDT" if i % 2 else "ETH/USDT",
            "price": Decimal("91234.12345678") + i,
            "ts": t0 + dt.timedelta(seconds=i),
        }
        for i in range(100)
    ]
    table.append(pa.Table.from_pylist(rows, schema=arrow_schema))

    got = spark.table(f"k2.{namespace}.trades").orderBy("trade_id").collect()
    assert [r.trade_id for r in got] == list(range(100))
    assert got[7].price == Decimal("91241.12345678") and got[7].symbol == "BTC/USDT"
    # pyspark returns naive local-time datetimes: compare instants
    assert got[7].ts.timestamp() == (t0 + dt.timedelta(seconds=7)).timestamp()

    # and back: Spark appends through the same catalog, pyiceberg sees both snapshots
    spark.sql(
        f"INSERT INTO k2.{namespace}.trades VALUES "
        f"(1000, 'SOL/USDT', CAST('150.5' AS DECIMAL(18,8)), TIMESTAMP '2026-11-25 13:00:00')"
    )
    reloaded = cat.load_table(f"{namespace}.trades")
    assert len(reloaded.snapshots()) == 2
    assert reloaded.scan().to_arrow().num_rows == 101


def test_spark_streams_kafka_topic(
    kafka: dict[str, Any], catalog: dict[str, Any], spark: SparkSession, tmp_path: Path
) -> None:
    topic = _unique("k2_test_stream")
    _produce(kafka["bootstrap_servers"], topic, N_MESSAGES)
    stream = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka["bootstrap_servers"])
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    query_name = _unique("k2_test_memory")
    query = (
        stream.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "offset")
        .writeStream.format("memory")
        .queryName(query_name)
        .trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "memory-checkpoint"))
        .start()
    )
    assert query.awaitTermination(180), "availableNow query did not finish"
    assert query.exception() is None
    assert spark.table(query_name).count() == N_MESSAGES
    assert spark.table(query_name).select("value").distinct().count() == N_MESSAGES

    # the same topic into an Iceberg table through the REST catalog (what the bronze job does)
    namespace = _unique("k2_test")
    spark.sql(f"CREATE NAMESPACE k2.{namespace}")
    spark.sql(
        f"CREATE TABLE k2.{namespace}.raw (key STRING, value BINARY, topic STRING, "
        f"`partition` INT, `offset` BIGINT) USING iceberg"
    )
    to_iceberg = (
        stream.select("key", "value", "topic", "partition", "offset")
        .selectExpr("CAST(key AS STRING) AS key", "value", "topic", "partition", "offset")
        .writeStream.trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "iceberg-checkpoint"))
        .toTable(f"k2.{namespace}.raw")
    )
    assert to_iceberg.awaitTermination(180), "availableNow query did not finish"
    assert to_iceberg.exception() is None
    assert spark.table(f"k2.{namespace}.raw").count() == N_MESSAGES


def test_every_service_listens_on_loopback_only(
    stack: Stack,
    kafka: dict[str, Any],
    registry: dict[str, Any],
    catalog: dict[str, Any],
    spark: SparkSession,
) -> None:
    import psutil

    from k2.stack.base import recorded_pids

    pids = {
        name: pid
        for name in ("kafka", "registry", "catalog")
        for name, pid in recorded_pids(stack.run_dir(name)).items()
    }
    spark_jvms = [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]
    assert spark_jvms, "no Spark JVM under this process"
    pids |= {f"spark-{p.pid}": p.pid for p in spark_jvms}
    for name, pid in pids.items():
        listening = [
            c.laddr
            for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, name
        assert {a.ip for a in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, (name, listening)
