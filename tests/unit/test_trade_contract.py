"""The trade v3 contract: trade_v3.avsc and the rules trade.py derives from it."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from k2.contracts import trade
from k2.contracts.trade import DecimalOutOfRange, to_decimal

EXPECTED_FIELDS = [
    "message_id",
    "trade_id",
    "symbol",
    "exchange",
    "timestamp",
    "price",
    "quantity",
    "base_asset",
    "quote_currency",
    "side",
    "ingestion_timestamp",
    "vendor_data",
]


def _field(name: str) -> Any:
    return next(f for f in trade.schema_dict()["fields"] if f["name"] == name)


def test_record_name_and_namespace() -> None:
    s = trade.schema_dict()
    assert (s["type"], s["name"], s["namespace"]) == (
        "record",
        "CryptoTradeV3",
        "com.k2.marketdata",
    )


def test_twelve_fields_in_order() -> None:
    assert trade.field_names() == EXPECTED_FIELDS


def test_enum_symbols_exactly() -> None:
    assert trade.enum_symbols("Exchange") == ["BINANCE", "KRAKEN"]
    assert trade.enum_symbols("Side") == ["BUY", "SELL"]
    assert trade.EXCHANGES == ("BINANCE", "KRAKEN")
    assert trade.SIDES == ("BUY", "SELL")
    assert _field("exchange")["type"]["name"] == "Exchange"
    assert _field("side")["type"]["name"] == "Side"


@pytest.mark.parametrize("name", ["price", "quantity"])
def test_decimal_logical_type(name: str) -> None:
    assert _field(name)["type"] == {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": 18,
        "scale": 8,
    }
    assert (trade.PRECISION, trade.SCALE) == (18, 8)


@pytest.mark.parametrize("name", ["timestamp", "ingestion_timestamp"])
def test_timestamps_are_micros(name: str) -> None:
    assert _field(name)["type"] == {"type": "long", "logicalType": "timestamp-micros"}


def test_plain_fields_and_vendor_map() -> None:
    for name in ("message_id", "trade_id", "symbol", "base_asset", "quote_currency"):
        assert _field(name)["type"] == "string"
    assert _field("vendor_data")["type"] == {"type": "map", "values": "string"}


def test_fastavro_parses_the_schema_and_keeps_logical_types() -> None:
    parsed: Any = fastavro.parse_schema(trade.schema_dict())
    assert parsed["name"] == "com.k2.marketdata.CryptoTradeV3"
    assert trade.parsed_schema() is trade.parsed_schema()  # parsed once
    price = next(f for f in parsed["fields"] if f["name"] == "price")
    assert price["type"]["logicalType"] == "decimal"


def test_only_v3_schema_is_shipped() -> None:
    from importlib import resources

    avsc = sorted(
        p.name for p in resources.files("k2.contracts").iterdir() if p.name.endswith(".avsc")
    )
    assert avsc == ["trade_v3.avsc"]


# ---------------------------------------------------------------- decimal(18,8)


@pytest.mark.parametrize(
    "text",
    [
        "99999999.99999999",
        "9999999999.99999999",
        "-9999999999.99999999",
        "0.00000001",
        "0",
        "42",
        "1.500000000000",
    ],
)
def test_decimal_values_that_fit(text: str) -> None:
    d = to_decimal(text, "price")
    assert d == Decimal(text)
    assert d.as_tuple().exponent == -8


def test_smallest_step_keeps_its_digits() -> None:
    d = to_decimal("0.00000001", "quantity")
    assert d == Decimal("1E-8") and d != 0
    assert format(d, "f") == "0.00000001"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10000000000", "does not fit"),
        (Decimal("1e10"), "does not fit"),
        ("1e10", "does not fit"),
        ("-10000000000.00000000", "does not fit"),
        ("0.000000001", "more than 8 decimal places"),
        ("43250.123456789", "more than 8 decimal places"),
        ("NaN", "not finite"),
        ("Infinity", "not finite"),
        ("abc", "not a decimal"),
        ("", "not a decimal"),
    ],
)
def test_decimal_values_that_do_not_fit_are_refused_naming_field_and_value(
    value: object, why: str
) -> None:
    with pytest.raises(DecimalOutOfRange) as err:
        to_decimal(value, "price")  # type: ignore[arg-type]
    assert "price=" in str(err.value)
    assert repr(value) in str(err.value)
    assert why in str(err.value)


def test_decimal_never_goes_through_float() -> None:
    # 0.1 + 0.2 as text stays exact; a float would have been refused (too many places)
    assert to_decimal("0.30000000", "price") == Decimal("0.3")
    exact_float = Decimal.from_float(0.1)  # 0.1000000000000000055511151231257827...
    with pytest.raises(DecimalOutOfRange, match="more than 8 decimal places"):
        to_decimal(exact_float, "price")


# ---------------------------------------------------------------- message id, encoding


def test_message_id_is_deterministic() -> None:
    a = trade.message_id("BINANCE", "BTCUSDT", 5000000001)
    assert a == trade.message_id("BINANCE", "BTCUSDT", "5000000001") == "BINANCE:BTCUSDT:5000000001"
    assert a != trade.message_id("KRAKEN", "BTCUSDT", 5000000001)


def test_unicode_vendor_data_round_trips_through_fastavro() -> None:
    rec = {
        "message_id": "KRAKEN:BTC/USD:1",
        "trade_id": "1",
        "symbol": "BTC/USD",
        "exchange": "KRAKEN",
        "timestamp": 1_700_000_000_000_000,
        "price": to_decimal("37000.1", "price"),
        "quantity": to_decimal("0.5", "quantity"),
        "base_asset": "BTC",
        "quote_currency": "USD",
        "side": "BUY",
        "ingestion_timestamp": 1_700_000_000_000_001,
        "vendor_data": {
            "native_symbol": "XBT/USD",
            "note": "日本語 ✓ émoji 🚀",
            "ключ": "значение",
        },
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, trade.parsed_schema(), rec)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, trade.parsed_schema())
    assert isinstance(back, dict)
    assert back["vendor_data"] == rec["vendor_data"]
    assert back["price"] == Decimal("37000.1")
