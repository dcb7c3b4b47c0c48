"""Trade v3 on the wire: Confluent framing + Avro binary, backed by the Schema Registry.

A Kafka value is ``0x00 | schema id (4 bytes, big-endian) | Avro binary body`` (the
Confluent wire format). The schema id comes from the registry (subject
``<topic>-value``, TopicNameStrategy) and is resolved once per serializer; nothing on
the per-record path talks to the registry.

The serializer's hot path is an encoder compiled once from fastavro's parsed form of
``trade_v3.avsc`` (one small function per field, in schema order): about twice as
fast as calling ``fastavro.schemaless_writer`` per record and byte-for-byte identical
to it (the unit tests check that). A schema with a type the compiled encoder does not
know falls back to fastavro, so the .avsc stays the only definition of the layout.
Decoding uses fastavro with the writer's schema fetched by id (cached).

Prices and quantities go through ``trade.to_decimal``: a value that does not fit
decimal(18,8) raises ``DecimalOutOfRange`` naming the field and the value; nothing is
ever rounded.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from k2.contracts.topics import value_subject
from k2.contracts.trade import parsed_schema, schema_dict, schema_text, to_decimal

MAGIC_BYTE = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 0x7FFFFFFF  # a Java int on the JVM side (Spark, Kafka clients)
COMPATIBILITY = "NONE"

_HEADER = struct.Struct(">BI")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SerdeError(ValueError):
    """A trade could not be encoded or a payload could not be decoded."""


class WireFormatError(SerdeError):
    """The payload is not a Confluent-framed Avro trade (magic byte, length, body)."""


class UnknownSchemaError(SerdeError):
    """The payload names a schema id the registry does not know."""


class TradeEncodingError(SerdeError):
    """A trade field is missing or has a value its Avro type cannot hold."""


# ---------------------------------------------------------------- wire framing (pure)


def wire_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header: magic byte 0 + the schema id, big-endian."""
    if not isinstance(schema_id, int) or not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id must be an int in [0, {MAX_SCHEMA_ID}], not {schema_id!r}")
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def split_wire(payload: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent-framed payload; the inverse of wire_header + body."""
    data = bytes(payload)
    if len(data) < HEADER_SIZE:
        raise WireFormatError(
            f"payload of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte Confluent header"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise WireFormatError(
            f"unknown magic byte 0x{magic:02x} (expected 0x{MAGIC_BYTE:02x}): not Confluent wire format"
        )
    return schema_id, data[HEADER_SIZE:]


# ---------------------------------------------------------------- registry


def register_trade_schema(client: Any, topic: str) -> int:
    """Register trade v3 under ``<topic>-value`` with compatibility NONE; return its schema id.

    Idempotent: registering the same schema again returns the same id, and setting
    NONE again is a no-op. `client` is a confluent_kafka SchemaRegistryClient.
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryError

    subject = value_subject(topic)
    schema = Schema(schema_text(), "AVRO")
    try:
        # First, so that registering cannot be refused by a stricter global default.
        client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
        preset = True
    except SchemaRegistryError:
        preset = False  # some registries only accept per-subject config once the subject exists
    schema_id = int(client.register_schema(subject, schema))
    if not preset:
        client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
    return schema_id


def registry_client(url: str) -> Any:
    """A SchemaRegistryClient for `url` (e.g. Apicurio's ``.../apis/ccompat/v7``)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url})


# ---------------------------------------------------------------- compiled encoder


def _unsigned_varint_slow(u: int) -> bytes:
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


# Varints 14 bits at a time: a 64-bit timestamp takes 4 table lookups instead of 8 loop turns.
_LOW14 = tuple(bytes(((i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80)) for i in range(1 << 14))
_FINAL = tuple(_unsigned_varint_slow(i) for i in range(1 << 14))


def _zigzag_varint(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint, least significant group first."""
    u = (n << 1) ^ (n >> 63)
    if u < 0x4000:
        return _FINAL[u]
    out = b""
    while u >= 0x4000:
        out += _LOW14[u & 0x3FFF]
        u >>= 14
    return out + _FINAL[u]


def _long(n: int) -> bytes:
    """A non-negative length or index (the common case is a table lookup)."""
    return _FINAL[n << 1] if n < 0x2000 else _zigzag_varint(n)


class _Unsupported(Exception):
    pass


Encoder = Callable[[Any, str], bytes]


def _string(value: Any, field: str) -> bytes:
    try:
        b: bytes = value.encode()
    except (AttributeError, UnicodeEncodeError):
        raise TradeEncodingError(
            f"{field}={value!r}: expected a (UTF-8 encodable) string"
        ) from None
    n = len(b)
    return (_FINAL[n << 1] if n < 0x2000 else _zigzag_varint(n)) + b


def _plain_long(value: Any, field: str) -> bytes:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TradeEncodingError(f"{field}={value!r}: expected an int")
    if not -(2**63) <= value < 2**63:
        raise TradeEncodingError(f"{field}={value!r}: does not fit an Avro long")
    return _zigzag_varint(value)


def _timestamp_micros(value: Any, field: str) -> bytes:
    if type(value) is int:
        return _plain_long(value, field)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)  # what fastavro does with a naive datetime
        delta = value - _EPOCH
        return _plain_long(
            (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,
            field,
        )
    return _plain_long(value, field)


def _enum(symbols: list[str]) -> Encoder:
    index = {s: _long(i) for i, s in enumerate(symbols)}

    def encode(value: Any, field: str) -> bytes:
        try:
            return index[value]
        except (KeyError, TypeError):
            raise TradeEncodingError(
                f"{field}={value!r}: not one of {', '.join(symbols)}"
            ) from None

    return encode


def _decimal_bytes(precision: int, scale: int) -> Encoder:
    if (precision, scale) != (18, 8):
        raise _Unsupported(f"decimal({precision},{scale})")  # to_decimal checks (18,8) only

    def encode(value: Any, field: str) -> bytes:
        q = to_decimal(value, field)  # exact or DecimalOutOfRange naming field and value
        unscaled = int(q.scaleb(scale))
        b = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
        return _long(len(b)) + b

    return encode


def _string_map(value: Any, field: str) -> bytes:
    try:
        items = value.items()
    except AttributeError:
        raise TradeEncodingError(f"{field}={value!r}: expected a map of strings") from None
    if not value:
        return b"\x00"
    parts = [_long(len(value))]
    try:
        for k, v in items:
            kb, vb = k.encode(), v.encode()
            parts += (_long(len(kb)), kb, _long(len(vb)), vb)
    except (AttributeError, UnicodeEncodeError):
        for k, v in items:
            _string(k, f"{field} key")
            _string(v, f"{field}[{k!r}]")
        raise  # not reached: the loop above raises for the offending entry
    parts.append(b"\x00")
    return b"".join(parts)


def _field_encoder(avro_type: Any) -> Encoder:
    if avro_type == "string":
        return _string
    if avro_type == "long":
        return _plain_long
    if isinstance(avro_type, dict):
        kind, logical = avro_type.get("type"), avro_type.get("logicalType")
        if kind == "enum":
            return _enum(list(avro_type["symbols"]))
        if kind == "long" and logical in ("timestamp-micros", None):
            return _timestamp_micros if logical else _plain_long
        if kind == "bytes" and logical == "decimal":
            return _decimal_bytes(int(avro_type["precision"]), int(avro_type.get("scale", 0)))
        if kind == "map" and avro_type.get("values") == "string":
            return _string_map
        if kind == "string" and not logical:
            return _string
    raise _Unsupported(repr(avro_type))


def _compile(schema: dict[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """An encoder for records of a (parsed) record schema, or None if it has a type we don't compile."""
    try:
        fields = tuple((f["name"], _field_encoder(f["type"])) for f in schema["fields"])
    except _Unsupported:
        return None

    def encode(record: Mapping[str, Any]) -> bytes:
        try:
            return b"".join([enc(record[name], name) for name, enc in fields])
        except KeyError as exc:
            missing = [name for name, _ in fields if name not in record]
            if not missing:
                raise
            raise TradeEncodingError(f"trade is missing field(s) {', '.join(missing)}") from exc

    return encode


def _fastavro_encoder(parsed: dict[str, Any]) -> Callable[[Mapping[str, Any]], bytes]:
    """fastavro per record, with the same decimal(18,8) check as the compiled encoder."""
    decimals = [
        f["name"]
        for f in parsed["fields"]
        if isinstance(f["type"], dict)
        and f["type"].get("logicalType") == "decimal"
        and (f["type"].get("precision"), f["type"].get("scale")) == (18, 8)
    ]

    def encode(record: Mapping[str, Any]) -> bytes:
        if decimals:
            record = {
                **record,
                **{n: to_decimal(record[n], n) for n in decimals if n in record},
            }
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TradeEncodingError(f"trade does not match the schema: {exc}") from exc
        return buf.getvalue()

    return encode


def avro_body_encoder(
    schema: dict[str, Any] | None = None,
) -> Callable[[Mapping[str, Any]], bytes]:
    """record -> Avro binary body (no header), for trade v3 by default.

    Compiled from fastavro's parsed form of the schema; fastavro itself encodes when
    the schema has a type the compiled encoder does not handle.
    """
    parsed = parsed_schema() if schema is None else fastavro.parse_schema(schema)
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ValueError(f"a record schema is needed, not {schema!r}")
    return _compile(parsed) or _fastavro_encoder(parsed)


# ---------------------------------------------------------------- serializer / deserializer


class TradeSerializer:
    """Trade dict -> Confluent-framed Avro bytes. Registry contacted once, at construction.

    Either give `client` + `topic` (the schema is registered under ``<topic>-value`` if
    needed, compatibility NONE) or an already known `schema_id`.
    """

    def __init__(
        self,
        client: Any = None,
        topic: str | None = None,
        *,
        schema_id: int | None = None,
    ):
        if schema_id is None:
            if client is None or topic is None:
                raise ValueError("TradeSerializer needs client and topic, or schema_id")
            schema_id = register_trade_schema(client, topic)
        self.schema_id = schema_id
        self._header = wire_header(schema_id)
        self._encode = avro_body_encoder()

    def __call__(self, trade: Mapping[str, Any], ctx: Any = None) -> bytes:
        """Also usable as a confluent_kafka value serializer: ``(obj, SerializationContext)``."""
        return self._header + self._encode(trade)

    serialize = __call__


class TradeDeserializer:
    """Confluent-framed Avro bytes -> trade dict (decimals as Decimal, timestamps as aware datetime).

    Writer schemas are fetched by id from the registry once and cached; records are
    resolved to trade v3 (the reader schema) when the writer schema differs.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        schemas: Mapping[int, str | dict[str, Any]] | None = None,
    ):
        self._client = client
        self._reader = parsed_schema()
        self._reader_canonical = _canonical(schema_dict())
        # schema id -> (parsed writer schema, reader schema or None when identical)
        self._writers: dict[int, tuple[Any, Any]] = {}
        for schema_id, schema in (schemas or {}).items():
            self._remember(schema_id, schema if isinstance(schema, dict) else json.loads(schema))

    def _remember(self, schema_id: int, schema: dict[str, Any]) -> tuple[Any, Any]:
        try:
            parsed = fastavro.parse_schema(schema)
        except Exception as exc:  # any parse failure means the same thing here
            raise SerdeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from exc
        reader = None if _canonical(schema) == self._reader_canonical else self._reader
        self._writers[schema_id] = (parsed, reader)
        return parsed, reader

    def writer_schema(self, schema_id: int) -> tuple[Any, Any]:
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        if self._client is None:
            raise UnknownSchemaError(
                f"schema id {schema_id} is unknown (no registry client configured)"
            )
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from exc
            raise
        if schema.schema_type not in (None, "AVRO"):
            raise SerdeError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        return self._remember(schema_id, json.loads(schema.schema_str))

    def __call__(self, payload: bytes | bytearray | memoryview, ctx: Any = None) -> dict[str, Any]:
        schema_id, body = split_wire(payload)
        writer, reader = self.writer_schema(schema_id)
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except EOFError as exc:
            raise WireFormatError(
                f"truncated Avro body ({len(body)} bytes) for schema id {schema_id}"
            ) from exc
        except SchemaResolutionError as exc:
            raise SerdeError(f"schema id {schema_id} cannot be read as trade v3: {exc}") from exc
        except OverflowError as exc:  # e.g. timestamp-micros beyond what datetime can hold
            raise SerdeError(
                f"a value is out of range for Python (schema id {schema_id}): {exc}"
            ) from exc
        except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
            raise WireFormatError(f"corrupt Avro body for schema id {schema_id}: {exc}") from exc
        if buf.tell() != len(body):
            raise WireFormatError(
                f"{len(body) - buf.tell()} unread byte(s) after the record (schema id {schema_id}):"
                " not one trade, or the wrong schema"
            )
        if not isinstance(record, dict):
            raise WireFormatError(f"schema id {schema_id} does not describe a record")
        return record

    deserialize = __call__


def _canonical(schema: dict[str, Any]) -> str:
    """A key-order-independent form. Not Avro's Parsing Canonical Form: that drops logical
    types, and a writer schema without decimal/timestamp logical types must not be taken
    for ours (it is then read through resolution against trade v3)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))
