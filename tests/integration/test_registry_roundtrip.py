"""Trade v3 against real software: Apicurio's Confluent-compatible API and Java Avro (avro-tools)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import to_parsing_canonical_form

from k2.contracts import serde
from k2.contracts.serde import (
    TradeDeserializer,
    TradeSerializer,
    UnknownSchemaError,
    wire_header,
)
from k2.contracts.topics import trades_topic, value_subject
from k2.contracts.trade import EXCHANGES, schema_dict, schema_text

pytestmark = pytest.mark.integration

AVSC = Path(__file__).resolve().parents[2] / "src" / "k2" / "contracts" / "trade_v3.avsc"
UTC = dt.UTC


def trade(exchange: str, **overrides: Any) -> dict[str, Any]:
    native = "BTCUSDT" if exchange == "BINANCE" else "XBT/USD"
    rec: dict[str, Any] = {
        "message_id": f"{exchange}:{native}:5000000001",
        "trade_id": "5000000001",
        "symbol": "BTC/USDT" if exchange == "BINANCE" else "BTC/USD",
        "exchange": exchange,
        "timestamp": 1_764_072_000_123_456,
        "price": Decimal("99999999.99999999"),
        "quantity": Decimal("0.00000001"),
        "base_asset": "BTC",
        "quote_currency": "USDT" if exchange == "BINANCE" else "USD",
        "side": "BUY",
        "ingestion_timestamp": 1_764_072_000_223_456,
        "vendor_data": {
            "native_symbol": native,
            "note": "日本語 ✓ émoji 🚀",
            "ключ": "значение",
        },
    }
    rec.update(overrides)
    return rec


def _client(registry: dict[str, Any]) -> Any:
    """A fresh client each time: nothing answered from confluent-kafka's local cache."""
    return serde.registry_client(registry["url"])


@pytest.fixture(scope="module")
def schema_ids(registry: dict[str, Any]) -> dict[str, int]:
    client = _client(registry)
    return {e: serde.register_trade_schema(client, trades_topic(e)) for e in EXCHANGES}


def test_both_subjects_registered_with_compatibility_none(
    registry: dict[str, Any], schema_ids: dict[str, int]
) -> None:
    client = _client(registry)
    subjects = set(client.get_subjects())
    for exchange in EXCHANGES:
        subject = value_subject(trades_topic(exchange))
        assert subject in subjects
        assert client.get_compatibility(subject) == "NONE"
    assert {value_subject(trades_topic(e)) for e in EXCHANGES} == {
        "market.crypto.trades.binance-value",
        "market.crypto.trades.kraken-value",
    }


def test_registering_again_is_idempotent(
    registry: dict[str, Any], schema_ids: dict[str, int]
) -> None:
    for exchange in EXCHANGES:
        topic = trades_topic(exchange)
        assert serde.register_trade_schema(_client(registry), topic) == schema_ids[exchange]
        assert _client(registry).get_versions(value_subject(topic)) == [1]


def test_schema_fetched_back_by_id_is_ours(
    registry: dict[str, Any], schema_ids: dict[str, int]
) -> None:
    for schema_id in set(schema_ids.values()):
        fetched = _client(registry).get_schema(schema_id)
        assert fetched.schema_type in (None, "AVRO")
        assert json.loads(fetched.schema_str) == schema_dict()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_round_trip_through_the_registry(registry: dict[str, Any], exchange: str) -> None:
    topic = trades_topic(exchange)
    ser = TradeSerializer(_client(registry), topic)
    de = TradeDeserializer(_client(registry))
    records = [
        trade(exchange),
        trade(
            exchange,
            price=Decimal("0.00000001"),
            quantity=Decimal("99999999.99999999"),
            side="SELL",
        ),
        trade(exchange, price="43250.1", quantity="1.500000000000", vendor_data={}),
        trade(
            exchange,
            price=Decimal("-9999999999.99999999"),
            vendor_data={"": "", "😀": "\u0000"},
        ),
    ]
    for rec in records:
        payload = ser(rec)
        assert serde.split_wire(payload)[0] == ser.schema_id
        back = de(payload)
        expected = {
            **rec,
            "price": Decimal(rec["price"]),
            "quantity": Decimal(rec["quantity"]),
            "timestamp": dt.datetime(1970, 1, 1, tzinfo=UTC)
            + dt.timedelta(microseconds=rec["timestamp"]),
            "ingestion_timestamp": dt.datetime(1970, 1, 1, tzinfo=UTC)
            + dt.timedelta(microseconds=rec["ingestion_timestamp"]),
        }
        assert back == expected
        assert back["quantity"].as_tuple().exponent == back["price"].as_tuple().exponent == -8


def test_unknown_schema_id_is_a_clear_error(
    registry: dict[str, Any], schema_ids: dict[str, int]
) -> None:
    unknown = max(schema_ids.values()) + 100_000
    body = TradeSerializer(schema_id=1)(trade("BINANCE"))[5:]
    with pytest.raises(UnknownSchemaError, match=f"schema id {unknown} is not in the registry"):
        TradeDeserializer(_client(registry))(wire_header(unknown) + body)


# ---------------------------------------------------------------- Java Avro (avro-tools)


@pytest.fixture(scope="module")
def avro_tools() -> list[str]:
    """`java -jar avro-tools-1.12.x.jar` (build/jvm/avro-tools/pom.xml, fetched once by Maven)."""
    from k2.stack import jvm

    jar = next(p for p in jvm.jars("avro-tools") if p.name.startswith("avro-tools-1.12."))
    return [jvm.find_java(11), "-jar", str(jar)]


def test_avro_tools_accepts_the_schema(avro_tools: list[str]) -> None:
    proc = subprocess.run(
        [*avro_tools, "canonical", str(AVSC), "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # Java's Parsing Canonical Form equals fastavro's: both read the same schema
    assert json.loads(proc.stdout) == json.loads(
        to_parsing_canonical_form(json.loads(schema_text()))
    )


def test_avro_tools_rejects_a_broken_schema(avro_tools: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text(schema_text().replace('"symbols": ["BUY", "SELL"]', '"symbols": ["BUY", "BUY"]'))
    proc = subprocess.run(
        [*avro_tools, "canonical", str(bad), "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0


def test_java_avro_decodes_our_bytes(avro_tools: list[str], tmp_path: Path) -> None:
    rec = trade("KRAKEN", price=Decimal("-1234.5"))
    body = tmp_path / "body.bin"
    body.write_bytes(TradeSerializer(schema_id=1)(rec)[5:])
    proc = subprocess.run(
        [
            *avro_tools,
            "fragtojson",
            "--no-pretty",
            "--schema-file",
            str(AVSC),
            str(body),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    decoded = json.loads(proc.stdout)

    def unscaled(
        text: str,
    ) -> Decimal:  # Avro JSON renders bytes as ISO-8859-1 characters
        return Decimal(int.from_bytes(text.encode("latin-1"), "big", signed=True)).scaleb(-8)

    assert unscaled(decoded.pop("price")) == Decimal("-1234.5")
    assert unscaled(decoded.pop("quantity")) == Decimal("0.00000001")
    expected = {k: v for k, v in rec.items() if k not in ("price", "quantity")}
    assert decoded == expected
