"""Where trades go: Kafka (Avro trade v3, Confluent wire format) or JSON lines.

Kafka: an idempotent producer (acks=all), key = canonical symbol, lz4 compression,
linger for batching, values encoded by `k2.contracts.serde.TradeSerializer` (schema
registered under `<topic>-value`). Topics are created when missing. Unparseable frames
go raw to the dead-letter topic with the error in headers; a trade that cannot be
encoded (its decimal does not fit) goes there too, as its JSON. Nothing is dropped
silently: every outcome is counted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, Protocol

import orjson

from k2.contracts.topics import DEAD_LETTER_TOPIC
from k2.contracts.trade import TradeV3

log = logging.getLogger("k2.ingest.sink")


@dataclass
class SinkStats:
    produced: int = 0  # handed to the producer (trades topic)
    delivered: int = 0  # acknowledged by the broker (Kafka) / written (jsonl)
    delivery_errors: int = 0
    dead_letters: int = 0
    encode_errors: int = 0
    queue_full: int = 0  # times the producer's queue was full (backpressure)
    latencies_ms: deque[float] = field(
        default_factory=lambda: deque(maxlen=20_000)
    )  # recent sampled produce->ack latencies


class Sink(Protocol):
    stats: SinkStats

    def send(self, trades: list[TradeV3]) -> None: ...
    def dead_letter(self, raw: bytes, error: str, headers: dict[str, str]) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> int: ...
    def close(self) -> None: ...


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def trade_json(trade: TradeV3) -> bytes:
    return orjson.dumps(trade, default=_json_default)


class JsonlSink:
    """v3 records as JSON lines (decimals as strings, timestamps as epoch micros)."""

    def __init__(self, out: IO[bytes] | None = None, err: IO[bytes] | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.err = err if err is not None else sys.stderr.buffer
        self.stats = SinkStats()

    def send(self, trades: list[TradeV3]) -> None:
        self.out.write(b"".join([trade_json(t) + b"\n" for t in trades]))
        self.stats.produced += len(trades)
        self.stats.delivered += len(trades)

    def dead_letter(self, raw: bytes, error: str, headers: dict[str, str]) -> None:
        self.err.write(
            orjson.dumps({"dead_letter": raw.decode(errors="replace"), "error": error, **headers})
            + b"\n"
        )
        self.stats.dead_letters += 1

    def poll(self) -> None:
        pass

    def flush(self, timeout: float = 10.0) -> int:
        self.out.flush()
        self.err.flush()
        return 0

    def close(self) -> None:
        self.flush()


class MemorySink:
    """Keeps everything in lists (tests, in-process use)."""

    def __init__(self) -> None:
        self.trades: list[TradeV3] = []
        self.dead: list[tuple[bytes, str, dict[str, str]]] = []
        self.stats = SinkStats()
        self.delay = 0.0  # seconds per send: simulates a slow Kafka

    def send(self, trades: list[TradeV3]) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.trades.extend(trades)
        self.stats.produced += len(trades)
        self.stats.delivered += len(trades)

    def dead_letter(self, raw: bytes, error: str, headers: dict[str, str]) -> None:
        self.dead.append((raw, error, headers))
        self.stats.dead_letters += 1

    def poll(self) -> None:
        pass

    def flush(self, timeout: float = 10.0) -> int:
        return 0

    def close(self) -> None:
        pass


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
        "message.timeout.ms": 120_000,
        "client.id": "k2-ingestor",
    }
    conf.update(overrides)
    return conf


def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int = 3,
    replication: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create the topics that do not exist yet (existing ones are left alone)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing],
        request_timeout=timeout,
    )
    for topic, fut in futures.items():
        try:
            fut.result(timeout)
            log.info("created topic %s (%d partitions)", topic, partitions)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise


class KafkaSink:
    """Trades -> `topic` as Avro v3; unparseable frames -> the dead-letter topic."""

    SAMPLE_EVERY = 64  # one produce->ack latency sample every N trades

    def __init__(
        self,
        bootstrap_servers: str,
        schema_registry_url: str,
        topic: str,
        *,
        exchange: str,
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
        create_topics: bool = True,
        partitions: int = 3,
        producer_overrides: dict[str, Any] | None = None,
        serializer: Any = None,
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.exchange = exchange
        self.dead_letter_topic = dead_letter_topic
        self.stats = SinkStats()
        if create_topics:
            ensure_topics(bootstrap_servers, [topic, dead_letter_topic], partitions=partitions)
        if serializer is None:
            from k2.contracts.serde import TradeSerializer, registry_client

            serializer = TradeSerializer(registry_client(schema_registry_url), topic)
        self._serialize = serializer
        self._producer = Producer(
            producer_config(
                bootstrap_servers, **(producer_overrides or {}), on_delivery=self._on_delivery
            )
        )
        self._keys: dict[str, bytes] = {}
        self._counter = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.stats.delivery_errors += 1
            log.error("delivery to %s failed: %s", msg.topic(), err)
        else:
            self.stats.delivered += 1

    def _timed(self, started: float) -> Any:
        def cb(err: Any, msg: Any) -> None:
            self._on_delivery(err, msg)
            if err is None:
                self.stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)

        return cb

    def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Any = None,
        on_delivery: Any = None,
    ) -> None:
        produce = self._producer.produce
        while True:
            try:
                if on_delivery is None:
                    produce(topic, value, key, headers=headers)
                else:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                self.stats.queue_full += 1
                self._producer.poll(0.05)  # Kafka is slow: wait for acks (backpressure)

    def send(self, trades: list[TradeV3]) -> None:
        from k2.contracts.trade import DecimalOutOfRange

        serialize = self._serialize
        keys = self._keys
        topic = self.topic
        produce = self._producer.produce
        for t in trades:
            try:
                value = serialize(t)
            except (DecimalOutOfRange, ValueError, TypeError) as exc:
                self.stats.encode_errors += 1
                self.dead_letter(
                    trade_json(t), f"encode: {exc}", {"message_id": t.get("message_id", "")}
                )
                continue
            sym = t["symbol"]
            key = keys.get(sym)
            if key is None:
                key = keys[sym] = sym.encode()
            self._counter += 1
            if self._counter % self.SAMPLE_EVERY == 0:
                self._produce(topic, value, key, on_delivery=self._timed(time.perf_counter()))
            else:
                try:
                    produce(topic, value, key)
                except BufferError:
                    self._produce(topic, value, key)
        self.stats.produced += len(trades)

    def dead_letter(self, raw: bytes, error: str, headers: dict[str, str]) -> None:
        hdrs = [
            ("error", error.encode()[:4000]),
            ("exchange", self.exchange.encode()),
            ("source_topic", self.topic.encode()),
        ]
        hdrs += [(k, str(v).encode()) for k, v in headers.items()]
        self._produce(self.dead_letter_topic, raw, self.exchange.encode(), headers=hdrs)
        self.stats.dead_letters += 1

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        return int(self._producer.flush(timeout))

    def close(self) -> None:
        remaining = self.flush()
        if remaining:
            log.error("%d message(s) still undelivered at shutdown", remaining)
