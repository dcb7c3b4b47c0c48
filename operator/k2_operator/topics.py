"""The ExchangeFeed's Kafka topic, through confluent-kafka's AdminClient.

Best effort by design: the operator may run where Kafka is not reachable (e.g. out of
the cluster, or before Kafka is up). Then the topic is `Skipped` and the feed's status
says so; the ingestor's producer (auto-create) or a later reconcile will take care of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from k2_operator.render import TopicSpec

log = logging.getLogger(__name__)

CREATED, EXISTS, SKIPPED, FAILED, DISABLED = (
    "Created",
    "Exists",
    "Skipped",
    "Failed",
    "Disabled",
)


@dataclass(frozen=True)
class TopicResult:
    name: str
    state: str  # Created | Exists | Skipped | Failed | Disabled
    partitions: int | None = None
    message: str = ""

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "message": self.message,
        }
        if self.partitions is not None:
            out["partitions"] = self.partitions
        return out


class TopicManager:
    """Creates topics (and grows partitions) on the bootstrap servers it is given.

    `bootstrap_override` replaces the feed's bootstrap servers (when the operator reaches
    Kafka by another address than the ingestors do); `enabled=False` skips everything.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        bootstrap_override: str | None = None,
        timeout: float = 5.0,
    ):
        self.enabled = enabled
        self.bootstrap_override = bootstrap_override or None
        self.timeout = timeout

    def _admin(self, bootstrap: str) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(
            {
                "bootstrap.servers": bootstrap,
                "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
                "socket.timeout.ms": int(self.timeout * 1000),
                "reconnect.backoff.max.ms": 1000,
                "log_level": 3,  # errors only: an unreachable broker is an expected, reported state
            }
        )

    def ensure(self, bootstrap: str, topic: TopicSpec) -> TopicResult:
        if not self.enabled:
            return TopicResult(
                topic.name,
                DISABLED,
                message="topic management is off (--kafka-admin off)",
            )
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewPartitions, NewTopic

        servers = self.bootstrap_override or bootstrap
        try:
            admin = self._admin(servers)
            metadata = admin.list_topics(timeout=self.timeout)
        except (KafkaException, ValueError, RuntimeError) as exc:
            return TopicResult(
                topic.name, SKIPPED, message=f"Kafka at {servers} not reachable: {exc}"
            )
        existing = metadata.topics.get(topic.name)
        try:
            if existing is not None and not existing.error:
                have = len(existing.partitions)
                if have < topic.partitions:
                    futures = admin.create_partitions([NewPartitions(topic.name, topic.partitions)])
                    futures[topic.name].result(timeout=self.timeout)
                    return TopicResult(
                        topic.name,
                        EXISTS,
                        topic.partitions,
                        f"partitions grown {have} -> {topic.partitions}",
                    )
                return TopicResult(topic.name, EXISTS, have)
            new = NewTopic(
                topic.name,
                num_partitions=topic.partitions,
                replication_factor=topic.replication_factor,
                config=dict(topic.config),
            )
            futures = admin.create_topics(
                [new], operation_timeout=self.timeout, request_timeout=self.timeout
            )
            futures[topic.name].result(timeout=self.timeout * 2)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            name = getattr(err, "name", lambda: "")()
            if name == "TOPIC_ALREADY_EXISTS":
                return TopicResult(topic.name, EXISTS, topic.partitions)
            return TopicResult(topic.name, FAILED, message=str(err))
        except Exception as exc:  # noqa: BLE001 - timeouts and librdkafka surprises are reported, not raised
            return TopicResult(topic.name, FAILED, message=f"{type(exc).__name__}: {exc}")
        return TopicResult(topic.name, CREATED, topic.partitions, f"created on {servers}")
