"""Which Confluent schema ids silver may decode as trade v3.

A payload's header names a schema id. Silver accepts it for topic T only when the
registry lists that id under subject ``T-value`` *and* the schema behind it is trade v3
(the one silver decodes with): with compatibility NONE a subject may hold other schemas,
and decoding their records as v3 would produce garbage rather than an error.

Lookups happen on the driver, once per new (topic, id) pair seen in a micro-batch, and
are cached for the life of the job. A registry that cannot be reached raises: the batch
fails and is retried from the checkpoint, so a registry outage never sends valid trades
to the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from k2.contracts.topics import value_subject
from k2.contracts.trade import schema_dict


def same_schema(a: str | dict[str, Any], b: str | dict[str, Any]) -> bool:
    """Equal as JSON documents (key order and whitespace ignored; logical types kept)."""

    def norm(s: str | dict[str, Any]) -> str:
        return json.dumps(
            json.loads(s) if isinstance(s, str) else s,
            sort_keys=True,
            separators=(",", ":"),
        )

    try:
        return norm(a) == norm(b)
    except (TypeError, ValueError):
        return False


class SchemaIds:
    """topic -> the schema ids that are trade v3 registered under `<topic>-value`.

    `client` is a confluent_kafka SchemaRegistryClient (or anything with `get_versions`,
    `get_version` and `get_schema`); `url` builds one.
    """

    def __init__(self, url: str | None = None, *, client: Any = None) -> None:
        if client is None:
            if url is None:
                raise ValueError("SchemaIds needs a registry url or a client")
            from k2.contracts.serde import registry_client

            client = registry_client(url)
        self._client = client
        self._verdicts: dict[tuple[str, int], bool] = {}
        self._subject_ids: dict[str, set[int]] = {}
        self._v3 = schema_dict()

    def _ids_under(self, subject: str, refresh: bool) -> set[int]:
        if refresh or subject not in self._subject_ids:
            from confluent_kafka.schema_registry import SchemaRegistryError

            ids: set[int] = set()
            try:
                versions = self._client.get_versions(subject)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
                versions = []
            for v in versions:
                registered = self._client.get_version(subject, v)
                ids.add(int(registered.schema_id))
            self._subject_ids[subject] = ids
        return self._subject_ids[subject]

    def _is_v3(self, schema_id: int) -> bool:
        schema = self._client.get_schema(schema_id)
        if getattr(schema, "schema_type", None) not in (None, "AVRO"):
            return False
        return same_schema(schema.schema_str, self._v3)

    def check(self, topic: str, schema_id: int) -> bool:
        key = (topic, schema_id)
        if key not in self._verdicts:
            subject = value_subject(topic)
            ids = self._ids_under(subject, refresh=False)
            if schema_id not in ids:  # registered since we last looked?
                ids = self._ids_under(subject, refresh=True)
            self._verdicts[key] = schema_id in ids and self._is_v3(schema_id)
        return self._verdicts[key]

    def known(self, pairs: Iterable[tuple[str, int]]) -> dict[str, set[int]]:
        """The accepted ids among `pairs` (topic, id), as topic -> ids."""
        out: dict[str, set[int]] = {}
        for topic, schema_id in pairs:
            if topic is None or schema_id is None:
                continue
            if self.check(topic, int(schema_id)):
                out.setdefault(topic, set()).add(int(schema_id))
        return out


KnownIds = Callable[[Iterable[tuple[str, int]]], dict[str, set[int]]]
