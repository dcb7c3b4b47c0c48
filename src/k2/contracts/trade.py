"""The trade v3 contract: loaded once from trade_v3.avsc, plus the rules it implies.

Everything that encodes, decodes or validates a trade imports from here, so the
Avro file stays the single source of truth.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any, TypedDict

import fastavro

SCHEMA_RESOURCE = "trade_v3.avsc"
PRECISION = 18
SCALE = 8
_QUANTUM = Decimal(1).scaleb(-SCALE)
_MAX_DECIMAL = Decimal(10) ** (PRECISION - SCALE) - _QUANTUM  # 9999999999.99999999


class TradeV3(TypedDict):
    """A trade record as fastavro writes and reads it (timestamps as epoch micros on write)."""

    message_id: str
    trade_id: str
    symbol: str
    exchange: str
    timestamp: Any  # int micros when produced, datetime when decoded
    price: Decimal
    quantity: Decimal
    base_asset: str
    quote_currency: str
    side: str
    ingestion_timestamp: Any
    vendor_data: dict[str, str]


class DecimalOutOfRange(ValueError):
    """A price or quantity that decimal(18,8) cannot hold exactly."""


@cache
def schema_text() -> str:
    return resources.files("k2.contracts").joinpath(SCHEMA_RESOURCE).read_text()


@cache
def schema_dict() -> dict[str, Any]:
    return dict(json.loads(schema_text()))


@cache
def parsed_schema() -> Any:
    """fastavro's parsed form (parse once: it is expensive)."""
    return fastavro.parse_schema(schema_dict())


def field_names() -> list[str]:
    return [f["name"] for f in schema_dict()["fields"]]


def enum_symbols(enum_name: str) -> list[str]:
    for f in schema_dict()["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "enum" and t["name"] == enum_name:
            return list(t["symbols"])
    raise KeyError(enum_name)


EXCHANGES: tuple[str, ...] = tuple(enum_symbols("Exchange"))
SIDES: tuple[str, ...] = tuple(enum_symbols("Side"))


def to_decimal(value: str | Decimal | int, field: str) -> Decimal:
    """Parse an exchange's text into an exact decimal(18,8), or raise naming the field.

    Never rounds: '0.123456789' has a ninth significant fractional digit and is
    refused, while '1.500000000000' (zeros past the scale) is fine.
    """
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise DecimalOutOfRange(f"{field}={value!r} is not a decimal number") from None
    if not d.is_finite():
        raise DecimalOutOfRange(f"{field}={value!r} is not finite")
    try:
        q = d.quantize(_QUANTUM)
    except InvalidOperation:
        raise DecimalOutOfRange(f"{field}={value!r} does not fit decimal(18,8)") from None
    if q != d:
        raise DecimalOutOfRange(f"{field}={value!r} has more than {SCALE} decimal places")
    if abs(q) > _MAX_DECIMAL:
        raise DecimalOutOfRange(f"{field}={value!r} does not fit decimal(18,8)")
    return q


def message_id(exchange: str, native_symbol: str, trade_id: str | int) -> str:
    """Deterministic id: the same exchange trade always maps to the same id (cheap: no UUID)."""
    return f"{exchange}:{native_symbol}:{trade_id}"
