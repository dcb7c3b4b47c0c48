"""Kafka topic and Schema Registry subject names (TopicNameStrategy)."""

from __future__ import annotations

TOPIC_PREFIX = "market.crypto.trades"
DEAD_LETTER_TOPIC = f"{TOPIC_PREFIX}.deadletter"


def trades_topic(exchange: str) -> str:
    """market.crypto.trades.<exchange>, lower case."""
    return f"{TOPIC_PREFIX}.{exchange.lower()}"


def value_subject(topic: str) -> str:
    return f"{topic}-value"
