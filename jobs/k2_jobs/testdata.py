"""Known trades on real topics, for the jobs' integration tests and benchmarks.

`TradeFactory` makes v3 trades (valid ones, and each kind of invalid one) with
deterministic message ids; `Producer` registers trade v3 for each topic and sends
Confluent-framed payloads (or raw bytes, for payloads no serializer would make);
`create_tables` creates the medallion tables from their specs (k2.iceberg_ddl).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from k2.contracts.serde import (
    TradeSerializer,
    register_trade_schema,
    registry_client,
    wire_header,
)
from k2.contracts.tables import ALL_TABLES, TableSpec
from k2.contracts.topics import trades_topic

UTC = dt.UTC

NATIVE = {
    "BINANCE": ("BTCUSDT", "BTC/USDT", "BTC", "USDT"),
    "KRAKEN": ("BTC/USD", "BTC/USD", "BTC", "USD"),
}


def trade(exchange: str, n: int, ts: dt.datetime, **overrides: Any) -> dict[str, Any]:
    """Trade number `n` of `exchange` at `ts`; the same (exchange, n) always has the same message_id."""
    native, symbol, base, quote = NATIVE[exchange]
    t: dict[str, Any] = {
        "message_id": f"{exchange}:{native}:{n}",
        "trade_id": str(n),
        "symbol": symbol,
        "exchange": exchange,
        "timestamp": ts,
        "price": Decimal("97000.5") + Decimal(n % 1000) / 100,
        "quantity": Decimal("0.00120000"),
        "base_asset": base,
        "quote_currency": quote,
        "side": "BUY" if n % 2 else "SELL",
        "ingestion_timestamp": ts + dt.timedelta(milliseconds=3),
        "vendor_data": {"native_symbol": native},
    }
    t.update(overrides)
    return t


def wide_body(record: Mapping[str, Any]) -> bytes:
    """Avro body with price/quantity as decimal(38,8): what a buggy producer could send."""
    import fastavro

    from k2_jobs.transforms import decoding_schema

    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(json.loads(decoding_schema())), dict(record)
    )
    return buf.getvalue()


class Producer:
    """A confluent-kafka producer of trade v3 to the exchange topics (registering the schema)."""

    def __init__(
        self,
        bootstrap: str,
        registry_url: str,
        *,
        topics: Mapping[str, str] | None = None,
        **conf: Any,
    ) -> None:
        from confluent_kafka import Producer as KafkaProducer

        # exchange -> topic
        self.topics = dict(topics or {e: trades_topic(e) for e in NATIVE})
        client = registry_client(registry_url)
        self.schema_ids = {t: register_trade_schema(client, t) for t in self.topics.values()}
        self.sent = 0
        self.serializers = {t: TradeSerializer(schema_id=i) for t, i in self.schema_ids.items()}
        self._p = KafkaProducer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                "enable.idempotence": True,
                **conf,
            }
        )

    def topic(self, exchange: str) -> str:
        return self.topics[exchange]

    def send(self, topic: str, t: Mapping[str, Any], *, timestamp_ms: int | None = None) -> None:
        self.raw(
            topic,
            self.serializers[topic](t),
            key=str(t.get("symbol", "")),
            timestamp_ms=timestamp_ms,
        )

    def raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"value": value, "key": key}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._p.produce(topic, **kwargs)
                self.sent += 1
                break
            except BufferError:
                self._p.poll(0.05)
        self._p.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        left = self._p.flush(timeout)
        if left:
            raise RuntimeError(f"{left} Kafka records not delivered after {timeout}s")

    def header(self, topic: str) -> bytes:
        return wire_header(self.schema_ids[topic])


def invalid_records(
    producer: Producer, now: dt.datetime, tag: str
) -> list[tuple[str, bytes | None, str]]:
    """One record of each kind silver must reject: (topic, Kafka value, expected error_type).

    `tag` keeps message ids of different calls apart."""
    from k2_jobs.transforms import ErrorType

    b, k = producer.topic("BINANCE"), producer.topic("KRAKEN")
    enc = producer.serializers

    def bad(exchange: str, n: int, **kw: Any) -> dict[str, Any]:
        return trade(exchange, n, now, **{"message_id": f"{exchange}:BAD:{tag}:{n}", **kw})

    good_body = enc[b](bad("BINANCE", 0))[5:]
    return [
        (b, enc[b](bad("BINANCE", 1, price=Decimal("0"))), ErrorType.INVALID_PRICE),
        (k, enc[k](bad("KRAKEN", 2, price=Decimal("-3"))), ErrorType.INVALID_PRICE),
        (b, enc[b](bad("BINANCE", 3, quantity=Decimal("-0.1"))), ErrorType.INVALID_QUANTITY),
        (k, enc[k](bad("KRAKEN", 4, symbol="")), ErrorType.MISSING_SYMBOL),
        (b, enc[b](bad("BINANCE", 5, message_id="")), ErrorType.MISSING_MESSAGE_ID),
        (
            b,
            enc[b](bad("BINANCE", 6, timestamp=now + dt.timedelta(minutes=30))),
            ErrorType.FUTURE_TIMESTAMP,
        ),
        (
            k,
            enc[k](bad("KRAKEN", 7, timestamp=now - dt.timedelta(days=400))),
            ErrorType.STALE_TIMESTAMP,
        ),
        (
            b,
            producer.header(b) + wide_body(bad("BINANCE", 8, price=Decimal("123456789012.5"))),
            ErrorType.DECIMAL_OVERFLOW,
        ),
        (k, b"\x01" + enc[k](bad("KRAKEN", 9))[1:], ErrorType.MALFORMED_HEADER),
        (b, b"\x00\x00", ErrorType.MALFORMED_HEADER),
        (k, None, ErrorType.MALFORMED_HEADER),
        (b, producer.header(b) + b"\xff\xfe\xfd not avro", ErrorType.DECODE_ERROR),
        (b, wire_header(987_654) + good_body, ErrorType.UNKNOWN_SCHEMA_ID),
        (b, enc[b](bad("KRAKEN", 10)), ErrorType.EXCHANGE_MISMATCH),
    ]


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 2) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=1)
        for t in topics
        if t not in existing
    ]
    if new:
        for f in admin.create_topics(new, request_timeout=30).values():
            f.result()


def create_tables(
    catalog_uri: str, warehouse: str, specs: Iterable[TableSpec] = ALL_TABLES
) -> None:
    """Create (or evolve) the tables from their specs through pyiceberg, as `k2 tables apply` does."""
    from k2 import iceberg_ddl
    from k2.catalog import load_catalog

    catalog = load_catalog(catalog_uri, warehouse)
    for spec in specs:
        iceberg_ddl.apply(catalog, iceberg_ddl.plan_in(catalog, spec))


PIPELINE_YAML = """\
apiVersion: k2.io/v1alpha1
kind: ExchangeFeed
metadata: {{name: binance}}
spec: {{exchange: binance, symbols: [BTC/USDT], topic: "{binance_topic}"}}
---
apiVersion: k2.io/v1alpha1
kind: ExchangeFeed
metadata: {{name: kraken}}
spec: {{exchange: kraken, symbols: [BTC/USD], topic: "{kraken_topic}"}}
---
apiVersion: k2.io/v1alpha1
kind: MedallionPipeline
metadata: {{name: {name}}}
spec:
  feeds: [binance, kraken]
  namespace: {namespace}
  kafka:
    bootstrapServers: "{bootstrap}"
    schemaRegistryUrl: "{registry}"
    startingOffsets: earliest
  catalog: {{uri: "{catalog}", warehouse: "{warehouse}"}}
  checkpointLocation: "{checkpoints}"
  onKafkaDataLoss: fail
  spark:
    driver: {{cores: 1, memory: 1g}}
    executor: {{instances: 1, cores: 2, memory: 1g}}
  jobs:
    bronze: {{trigger: {bronze_trigger}{bronze_max}}}
    silver: {{trigger: {silver_trigger}{silver_max}}}
    gold: {{trigger: {gold_trigger}{gold_max}}}
"""


def pipeline_yaml(
    *,
    bootstrap: str,
    registry: str,
    catalog: str,
    warehouse: str,
    checkpoints: str,
    name: str = "crypto",
    namespace: str = "market_data",
    topics: Mapping[str, str] | None = None,
    triggers: Mapping[str, str] | None = None,
    max_per_trigger: Mapping[str, int] | None = None,
) -> str:
    """A declaration for local runs (what `k2 up` would hand the jobs)."""
    trig = {
        "bronze": "1 second",
        "silver": "1 second",
        "gold": "1 second",
        **(triggers or {}),
    }
    mx = dict(max_per_trigger or {})
    tp = {e: trades_topic(e) for e in NATIVE} | dict(topics or {})
    return PIPELINE_YAML.format(
        binance_topic=tp["BINANCE"],
        kraken_topic=tp["KRAKEN"],
        name=name,
        namespace=namespace,
        bootstrap=bootstrap,
        registry=registry,
        catalog=catalog,
        warehouse=warehouse,
        checkpoints=checkpoints,
        **{f"{k}_trigger": v for k, v in trig.items()},
        **{f"{k}_max": (f", maxOffsetsPerTrigger: {mx[k]}" if k in mx else "") for k in trig},
    )
