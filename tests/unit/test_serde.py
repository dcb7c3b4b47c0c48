"""Confluent wire format and the trade serializer/deserializer, without a registry server."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import struct
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from k2.contracts import serde
from k2.contracts.serde import (
    TradeDeserializer,
    TradeEncodingError,
    TradeSerializer,
    UnknownSchemaError,
    WireFormatError,
    split_wire,
    wire_header,
)
from k2.contracts.trade import (
    DecimalOutOfRange,
    parsed_schema,
    schema_dict,
    schema_text,
)

SCHEMA_ID = 42
UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME_MIN = (dt.datetime.min.replace(tzinfo=UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_DATETIME_MAX = (dt.datetime.max.replace(tzinfo=UTC) - _EPOCH) // dt.timedelta(microseconds=1)


def trade(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "message_id": "BINANCE:BTCUSDT:5000000001",
        "trade_id": "5000000001",
        "symbol": "BTC/USDT",
        "exchange": "BINANCE",
        "timestamp": 1_700_000_000_123_456,
        "price": Decimal("43250.12000000"),
        "quantity": Decimal("0.00150000"),
        "base_asset": "BTC",
        "quote_currency": "USDT",
        "side": "SELL",
        "ingestion_timestamp": 1_700_000_000_223_456,
        "vendor_data": {"native_symbol": "BTCUSDT", "is_best_match": "true"},
    }
    rec.update(overrides)
    return rec


def fastavro_body(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(), rec)
    return buf.getvalue()


@pytest.fixture
def ser() -> TradeSerializer:
    return TradeSerializer(schema_id=SCHEMA_ID)


@pytest.fixture
def de() -> TradeDeserializer:
    return TradeDeserializer(schemas={SCHEMA_ID: schema_text()})


# ---------------------------------------------------------------- framing


def test_wire_header_layout() -> None:
    assert wire_header(1) == b"\x00\x00\x00\x00\x01"
    assert wire_header(0x01020304) == b"\x00\x01\x02\x03\x04"
    assert len(wire_header(serde.MAX_SCHEMA_ID)) == serde.HEADER_SIZE == 5


@pytest.mark.parametrize("bad", [-1, serde.MAX_SCHEMA_ID + 1, "7", 1.0, None])
def test_wire_header_rejects_bad_ids(bad: Any) -> None:
    with pytest.raises(ValueError, match="schema id"):
        wire_header(bad)


def test_split_wire_inverts_wire_header() -> None:
    for schema_id in (0, 1, 255, 65_536, serde.MAX_SCHEMA_ID):
        assert split_wire(wire_header(schema_id) + b"body") == (schema_id, b"body")
    assert split_wire(bytearray(wire_header(3))) == (3, b"")
    assert split_wire(memoryview(wire_header(3) + b"x")) == (3, b"x")


def test_split_wire_wrong_magic_byte() -> None:
    with pytest.raises(WireFormatError, match="magic byte 0x01"):
        split_wire(b"\x01\x00\x00\x00\x07body")


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x00\x07"])
def test_split_wire_too_short(payload: bytes) -> None:
    with pytest.raises(WireFormatError, match="shorter than the 5-byte"):
        split_wire(payload)


# ---------------------------------------------------------------- encoding == fastavro


def test_body_is_byte_identical_to_fastavro(ser: TradeSerializer) -> None:
    rec = trade()
    payload = ser(rec)
    assert payload[:5] == wire_header(SCHEMA_ID)
    assert payload[5:] == fastavro_body(rec)


def _random_trade(rng: random.Random) -> dict[str, Any]:
    def dec() -> Decimal:
        unscaled = rng.choice([0, 1, rng.randrange(10**18), 10**18 - 1, rng.randrange(10**8)])
        return Decimal(rng.choice([1, -1]) * unscaled).scaleb(-8)

    def text() -> str:
        alphabet = "abcXYZ019/:_-é日本🚀"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 70, 200])))

    return trade(
        message_id=text(),
        trade_id=str(rng.randrange(10**12)),
        symbol=text(),
        exchange=rng.choice(["BINANCE", "KRAKEN"]),
        timestamp=rng.choice(
            [0, 1, -1, 63, 64, 8191, 8192, 2**63 - 1, -(2**63), rng.randrange(2**52)]
        ),
        price=dec(),
        quantity=dec(),
        base_asset=text(),
        quote_currency=text(),
        side=rng.choice(["BUY", "SELL"]),
        ingestion_timestamp=rng.randrange(-(2**62), 2**62),
        vendor_data={text(): text() for _ in range(rng.choice([0, 1, 3, 70]))},
    )


def test_random_trades_byte_identical_and_round_trip(
    ser: TradeSerializer, de: TradeDeserializer
) -> None:
    rng = random.Random(20251125)
    for _ in range(500):
        rec = _random_trade(rng)
        payload = ser(rec)
        assert payload[5:] == fastavro_body(rec), rec
        if not all(
            _DATETIME_MIN <= rec[k] <= _DATETIME_MAX for k in ("timestamp", "ingestion_timestamp")
        ):
            with pytest.raises(serde.SerdeError, match="out of range"):
                de(payload)  # years beyond 1..9999: valid Avro, not a Python datetime
            continue
        back = de(payload)
        assert back["price"] == rec["price"] and back["quantity"] == rec["quantity"]
        assert back["vendor_data"] == rec["vendor_data"]
        assert back["message_id"] == rec["message_id"]


def test_varint_boundaries_match_fastavro() -> None:
    for n in [
        0,
        1,
        -1,
        63,
        -64,
        64,
        -65,
        8191,
        8192,
        2**14,
        2**28 - 1,
        2**28,
        2**56,
        2**63 - 1,
        -(2**63),
    ]:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", n)
        assert serde._zigzag_varint(n) == buf.getvalue(), n


def test_datetime_timestamps_encode_like_micros(ser: TradeSerializer) -> None:
    ts = dt.datetime(2025, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    micros = 1_764_072_000_123_456
    assert ser(trade(timestamp=ts)) == ser(trade(timestamp=micros))
    assert ser(trade(timestamp=ts.replace(tzinfo=None)))[5:] == fastavro_body(trade(timestamp=ts))


# ---------------------------------------------------------------- round trip


def test_round_trip_edge_decimals_and_unicode(ser: TradeSerializer, de: TradeDeserializer) -> None:
    rec = trade(
        price=Decimal("99999999.99999999"),
        quantity=Decimal("0.00000001"),
        vendor_data={
            "native_symbol": "BTCUSDT",
            "note": "日本語 ✓ émoji 🚀",
            "ключ": "значение",
            "": "",
        },
    )
    back = de(ser(rec))
    assert back["price"] == Decimal("99999999.99999999")
    assert back["quantity"] == Decimal("0.00000001") and back["quantity"] > 0
    assert back["vendor_data"] == rec["vendor_data"]
    assert back["timestamp"] == dt.datetime.fromtimestamp(1_700_000_000, UTC) + dt.timedelta(
        microseconds=123_456
    )
    assert {k: v for k, v in back.items() if "timestamp" not in k} == {
        k: v for k, v in rec.items() if "timestamp" not in k
    }


def test_decimal_is_normalised_to_scale_8_never_rounded(
    ser: TradeSerializer, de: TradeDeserializer
) -> None:
    back = de(ser(trade(price="43250.1", quantity=Decimal("1.500000000000"))))
    assert back["price"] == Decimal("43250.1") and back["price"].as_tuple().exponent == -8
    assert back["quantity"] == Decimal("1.5")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", Decimal("1e10")),
        ("price", "10000000000"),
        ("quantity", Decimal("0.000000001")),
        ("price", "NaN"),
    ],
)
def test_decimal_that_does_not_fit_raises_naming_field_and_value(
    ser: TradeSerializer, field: str, value: Any
) -> None:
    with pytest.raises(DecimalOutOfRange) as err:
        ser(trade(**{field: value}))
    assert f"{field}={value!r}" in str(err.value)


def test_fastavro_fallback_encoder_also_refuses_out_of_range_decimals() -> None:
    encode = serde._fastavro_encoder(parsed_schema())
    assert encode(trade()) == fastavro_body(trade())
    with pytest.raises(DecimalOutOfRange, match="price="):
        encode(trade(price=Decimal("1e10")))


# ---------------------------------------------------------------- encoding errors


def test_missing_field_is_named(ser: TradeSerializer) -> None:
    rec = trade()
    del rec["side"], rec["symbol"]
    with pytest.raises(TradeEncodingError, match="missing field\\(s\\) symbol, side"):
        ser(rec)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("exchange", "BINANCE_US", "exchange='BINANCE_US': not one of BINANCE, KRAKEN"),
        ("side", "buy", "side='buy': not one of BUY, SELL"),
        ("symbol", 42, "symbol=42: expected"),
        ("symbol", b"BTC/USDT", "expected"),
        ("symbol", "\ud800", "UTF-8"),
        ("timestamp", 1.5, "timestamp=1.5: expected an int"),
        ("timestamp", True, "expected an int"),
        ("timestamp", 2**63, "does not fit an Avro long"),
        ("vendor_data", ["a"], "expected a map"),
        ("vendor_data", {"a": 1}, "vendor_data\\['a'\\]=1"),
        ("vendor_data", {1: "a"}, "vendor_data key=1"),
    ],
)
def test_bad_values_raise_clear_errors(
    ser: TradeSerializer, field: str, value: Any, match: str
) -> None:
    with pytest.raises(TradeEncodingError, match=match):
        ser(trade(**{field: value}))


# ---------------------------------------------------------------- decoding errors


def test_decoding_wrong_magic_byte(de: TradeDeserializer, ser: TradeSerializer) -> None:
    payload = bytearray(ser(trade()))
    payload[0] = 0x7B  # '{': JSON sent to an Avro topic
    with pytest.raises(WireFormatError, match="magic byte 0x7b"):
        de(bytes(payload))


def test_decoding_unknown_id_without_registry(de: TradeDeserializer, ser: TradeSerializer) -> None:
    payload = wire_header(999) + ser(trade())[5:]
    with pytest.raises(UnknownSchemaError, match="schema id 999"):
        de(payload)


@pytest.mark.parametrize("cut", [1, 10, 40, 60])
def test_decoding_truncated_body(de: TradeDeserializer, ser: TradeSerializer, cut: int) -> None:
    payload = ser(trade())
    with pytest.raises(WireFormatError):
        de(payload[:-cut])


def test_decoding_trailing_garbage(de: TradeDeserializer, ser: TradeSerializer) -> None:
    with pytest.raises(WireFormatError, match="unread byte"):
        de(ser(trade()) + b"\x00\x01")


# ---------------------------------------------------------------- registry interplay (fake client)


class FakeRegistry:
    """The four calls serde makes, in memory, with a call log."""

    def __init__(self) -> None:
        from confluent_kafka.schema_registry import Schema

        self.Schema = Schema
        self.calls: list[tuple[str, Any]] = []
        self.subjects: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.compat: dict[str, str] = {}

    def set_compatibility(self, subject_name: str, level: str) -> dict[str, str]:
        self.calls.append(("set_compatibility", subject_name))
        self.compat[subject_name] = level
        return {"compatibility": level}

    def register_schema(self, subject: str, schema: Any) -> int:
        self.calls.append(("register_schema", subject))
        ids = {v: k for k, v in self.schemas.items()}
        schema_id = ids.get(schema.schema_str) or len(self.schemas) + 1
        self.schemas[schema_id] = schema.schema_str
        self.subjects[subject] = schema_id
        return schema_id

    def get_schema(self, schema_id: int) -> Any:
        from confluent_kafka.schema_registry import SchemaRegistryError

        self.calls.append(("get_schema", schema_id))
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return self.Schema(self.schemas[schema_id], "AVRO")


def test_register_is_idempotent_and_sets_none() -> None:
    reg = FakeRegistry()
    a = serde.register_trade_schema(reg, "market.crypto.trades.binance")
    b = serde.register_trade_schema(reg, "market.crypto.trades.binance")
    c = serde.register_trade_schema(reg, "market.crypto.trades.kraken")
    assert a == b == c
    assert reg.compat == {
        "market.crypto.trades.binance-value": "NONE",
        "market.crypto.trades.kraken-value": "NONE",
    }
    assert json.loads(reg.schemas[a]) == schema_dict()


def test_serializer_talks_to_the_registry_once() -> None:
    reg = FakeRegistry()
    ser = TradeSerializer(reg, "market.crypto.trades.kraken")
    n = len(reg.calls)
    for i in range(100):
        ser(trade(trade_id=str(i)))
    assert len(reg.calls) == n
    assert ser(trade())[:5] == wire_header(ser.schema_id)


def test_deserializer_fetches_each_writer_schema_once_and_reports_unknown_ids() -> None:
    reg = FakeRegistry()
    ser = TradeSerializer(reg, "market.crypto.trades.binance")
    de = TradeDeserializer(reg)
    for _ in range(5):
        assert de(ser(trade()))["price"] == Decimal("43250.12")
    assert [c for c in reg.calls if c[0] == "get_schema"] == [("get_schema", ser.schema_id)]
    with pytest.raises(UnknownSchemaError, match="schema id 77 is not in the registry"):
        de(wire_header(77) + b"\x00")


def _written_with(writer: dict[str, Any], rec: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer), rec)
    return body.getvalue()


def test_deserializer_resolves_another_writer_schema_to_trade_v3() -> None:
    writer = json.loads(schema_text())
    writer["fields"].append({"name": "venue_extra", "type": "string"})  # a field v3 does not have
    de = TradeDeserializer(schemas={5: writer})
    back = de(wire_header(5) + _written_with(writer, trade(venue_extra="x")))
    assert "venue_extra" not in back and back["price"] == Decimal("43250.12")


def test_incompatible_writer_schema_is_a_clear_error() -> None:
    writer = json.loads(schema_text())
    writer["fields"] = [
        f for f in writer["fields"] if f["name"] != "vendor_data"
    ]  # no default in v3
    rec = trade()
    del rec["vendor_data"]
    de = TradeDeserializer(schemas={5: writer})
    with pytest.raises(
        serde.SerdeError, match=r"schema id 5 cannot be read as trade v3.*vendor_data"
    ):
        de(wire_header(5) + _written_with(writer, rec))


def test_compiled_encoder_is_used_for_trade_v3() -> None:
    assert serde._compile(parsed_schema()) is not None
    odd = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "x", "type": ["null", "string"]}],
    }
    assert serde._compile(odd) is None
    encode = serde.avro_body_encoder(odd)
    assert encode({"x": "a"}) == b"\x02\x02a"


def test_serializer_usable_as_confluent_value_serializer(ser: TradeSerializer) -> None:
    assert ser(trade(), None) == ser.serialize(trade())
    assert struct.unpack(">bI", ser(trade())[:5]) == (0, SCHEMA_ID)
