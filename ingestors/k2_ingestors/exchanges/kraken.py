"""Kraken spot: WebSocket v2 (default) and the legacy v1 array format.

v2 (`wss://ws.kraken.com/v2`):
    -> {"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":1}
    <- {"method":"subscribe","result":{"channel":"trade","snapshot":false,"symbol":"BTC/USD"},"success":true,...}  (one per symbol)
    <- {"channel":"trade","type":"update","data":[{"symbol","side","price","qty","ord_type","trade_id","timestamp"}, ...]}
    <- {"channel":"heartbeat"} about every second; {"channel":"status",...}; {"method":"ping"} -> {"method":"pong"}
Prices and quantities are JSON numbers: parsed with parse_float=Decimal, never float.
Every trade of a batched frame is emitted.

v1 (`wss://ws.kraken.com`): [channelID, [[price, volume, time, side, orderType, misc], ...], "trade", "XBT/USD"],
with XBT (and XDG) for BTC (DOGE). v1 trades carry no id: the id is derived from the
trade's own fields (time, side, price, volume), so it is the same on every connection.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from k2.contracts.trade import TradeV3
from k2_ingestors.exchanges.base import (
    Event,
    ExchangeAdapter,
    ParseError,
    SymbolInfo,
    add_unmapped,
    micros_from_rfc3339,
    micros_from_seconds_text,
    trade_amounts,
    trade_record,
    vendor_str,
)

EXCHANGE = "KRAKEN"
V1_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
V1_NATIVE = {v: k for k, v in V1_ALIASES.items()}
_MAPPED_V2 = frozenset(("symbol", "side", "price", "qty", "trade_id", "timestamp"))
_SIDES = {"buy": "BUY", "sell": "SELL", "b": "BUY", "s": "SELL"}
_decode_v2 = json.JSONDecoder(parse_float=Decimal).decode


def is_v2_url(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").endswith("/v2")


class KrakenAdapter(ExchangeAdapter):
    name: ClassVar[str] = EXCHANGE
    default_urls: ClassVar[tuple[str, ...]] = ("wss://ws.kraken.com/v2",)
    max_connection_lifetime: ClassVar[float | None] = None
    stale_after: ClassVar[float] = 10.0  # heartbeats arrive about every second
    app_ping_interval: ClassVar[float | None] = 30.0
    sequential_ids: ClassVar[bool] = True
    aliases: ClassVar[dict[str, str]] = V1_ALIASES

    def __init__(self, symbols: Any = (), snapshot: bool = False) -> None:
        self.snapshot = snapshot
        super().__init__(symbols)
        for info in list(self._by_canonical.values()):  # v1 spellings (XBT/USD) map too
            v1 = self.v1_symbol(info.canonical)
            self._by_native.setdefault(v1, SymbolInfo(info.canonical, v1, info.base, info.quote))
        self._req_id = 0

    def native_symbol(self, canonical: str) -> str:
        return canonical.upper()  # v2 spells symbols canonically (BTC/USD)

    @staticmethod
    def v1_symbol(canonical: str) -> str:
        base, _, quote = canonical.upper().partition("/")
        return f"{V1_NATIVE.get(base, base)}/{V1_NATIVE.get(quote, quote)}"

    def subscribe_messages(self, url: str) -> list[str]:
        self._req_id += 1
        if is_v2_url(url):
            msg: dict[str, Any] = {
                "method": "subscribe",
                "params": {
                    "channel": "trade",
                    "symbol": list(self.symbols),
                    "snapshot": self.snapshot,
                },
                "req_id": self._req_id,
            }
        else:
            msg = {
                "event": "subscribe",
                "pair": [self.v1_symbol(s) for s in self.symbols],
                "subscription": {"name": "trade"},
            }
        return [orjson.dumps(msg).decode()]

    def app_ping(self, url: str) -> str | None:
        self._req_id += 1
        if is_v2_url(url):
            return orjson.dumps({"method": "ping", "req_id": self._req_id}).decode()
        return orjson.dumps({"event": "ping", "reqid": self._req_id}).decode()

    # ---- parsing --------------------------------------------------------------
    def parse(self, raw: bytes | str, ingest_us: int) -> list[TradeV3] | Event:
        try:
            msg = _decode_v2(raw.decode() if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"invalid JSON: {exc}") from None
        if msg.__class__ is list:
            return self._parse_v1_array(msg, ingest_us)
        if msg.__class__ is not dict:
            raise ParseError(f"expected a JSON object or array, got {type(msg).__name__}")
        channel = msg.get("channel")
        if channel == "trade":
            return self._parse_v2_trades(msg, ingest_us)
        if channel == "heartbeat":
            return Event("heartbeat")
        if channel == "status":
            data = msg.get("data")
            info = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            return Event(
                "status",
                {
                    "system": info.get("system"),
                    "version": info.get("version"),
                    "connection_id": info.get("connection_id"),
                },
            )
        method = msg.get("method")
        if method is not None:
            if method == "pong":
                return Event("pong", {"req_id": msg.get("req_id")})
            if msg.get("success") is False:
                return Event(
                    "error",
                    {"method": method, "error": msg.get("error"), "symbol": msg.get("symbol")},
                )
            if method == "subscribe":
                result = msg.get("result") or {}
                return Event(
                    "subscribed",
                    {
                        "channel": result.get("channel"),
                        "symbol": result.get("symbol"),
                        "req_id": msg.get("req_id"),
                    },
                )
            if method == "unsubscribe":
                return Event("unsubscribed", {"symbol": (msg.get("result") or {}).get("symbol")})
            return Event("info", {"method": method})
        event = msg.get("event")
        if event is not None:  # v1 events
            if event == "heartbeat":
                return Event("heartbeat")
            if event == "systemStatus":
                return Event("status", {"system": msg.get("status"), "version": msg.get("version")})
            if event == "subscriptionStatus":
                if msg.get("status") == "subscribed":
                    return Event(
                        "subscribed",
                        {"symbol": msg.get("pair"), "channel_id": msg.get("channelID")},
                    )
                if msg.get("status") == "error":
                    return Event(
                        "error", {"error": msg.get("errorMessage"), "symbol": msg.get("pair")}
                    )
                return Event("unsubscribed", {"symbol": msg.get("pair")})
            if event == "pong":
                return Event("pong", {"req_id": msg.get("reqid")})
            return Event("info", {"event": event})
        if channel is not None:
            return Event("ignored", {"channel": channel})
        raise ParseError("frame is neither a channel message, a method reply nor a v1 event")

    def _parse_v2_trades(self, msg: dict[str, Any], ingest_us: int) -> list[TradeV3]:
        data = msg.get("data")
        if not isinstance(data, list):
            raise ParseError("trade frame without a 'data' list")
        frame_type = msg.get("type")
        out: list[TradeV3] = []
        errors: list[str] = []
        for i, item in enumerate(data):
            try:
                out.append(self._v2_trade(item, frame_type, ingest_us))
            except ParseError as exc:
                errors.append(f"trade[{i}]: {exc.reason}")
        if errors:
            raise ParseError("; ".join(errors), out)
        return out

    def _v2_trade(self, t: Any, frame_type: Any, ingest_us: int) -> TradeV3:
        if t.__class__ is not dict:
            raise ParseError(f"trade is not an object: {t!r}")
        try:
            native = t["symbol"]
            side = _SIDES[t["side"]]
            price_v = t["price"]
            qty_v = t["qty"]
            tid = t["trade_id"]
            ts_text = t["timestamp"]
        except KeyError as exc:
            raise ParseError(
                f"trade lacks field {exc.args[0]!r}"
                if exc.args[0] in _MAPPED_V2
                else f"unknown side {t.get('side')!r}"
            ) from None
        except TypeError:
            raise ParseError(f"unknown side {t.get('side')!r}") from None
        if native.__class__ is not str or tid.__class__ is not int or ts_text.__class__ is not str:
            raise ParseError(
                f"trade has a field of the wrong type (symbol={native!r}, trade_id={tid!r}, timestamp={ts_text!r})"
            )
        info = self.symbol_info(native)
        price, qty = trade_amounts(price_v, qty_v, native, "trade_id", tid)
        try:
            ts = micros_from_rfc3339(ts_text)
        except ValueError as exc:
            raise ParseError(str(exc)) from None
        vendor = {"native_symbol": native}
        if frame_type is not None:
            vendor["type"] = vendor_str(frame_type)
        add_unmapped(vendor, t, _MAPPED_V2)
        return trade_record(
            EXCHANGE, native, info, str(tid), ts, price, qty, side, ingest_us, vendor
        )

    def _parse_v1_array(self, msg: list[Any], ingest_us: int) -> list[TradeV3]:
        if (
            len(msg) < 4
            or msg[-2] != "trade"
            or msg[1].__class__ is not list
            or msg[-1].__class__ is not str
        ):
            raise ParseError(f"v1 array frame is not a trade message: {str(msg)[:120]}")
        native = msg[-1]
        channel_id = msg[0]
        info = self.symbol_info(native)
        out: list[TradeV3] = []
        errors: list[str] = []
        for i, row in enumerate(msg[1]):
            try:
                out.append(self._v1_trade(row, native, info, channel_id, ingest_us))
            except ParseError as exc:
                errors.append(f"trade[{i}]: {exc.reason}")
        if errors:
            raise ParseError("; ".join(errors), out)
        return out

    def _v1_trade(
        self, row: Any, native: str, info: SymbolInfo, channel_id: Any, ingest_us: int
    ) -> TradeV3:
        if row.__class__ is not list or len(row) < 6:
            raise ParseError(
                f"v1 trade is not [price, volume, time, side, orderType, misc]: {row!r}"
            )
        price_t, vol_t, time_t, side_t, order_type, misc = row[:6]
        if not all(x.__class__ is str for x in (price_t, vol_t, time_t)):
            raise ParseError(f"v1 price/volume/time must be strings: {row!r}")
        side = _SIDES.get(side_t)
        if side is None:
            raise ParseError(f"unknown side {side_t!r}")
        price, qty = trade_amounts(price_t, vol_t, native)
        try:
            ts = micros_from_seconds_text(time_t)
        except ValueError as exc:
            raise ParseError(f"{native}: {exc}") from None
        # v1 carries no trade id (newer servers append one): derive one from the trade itself.
        trade_id = (
            str(row[6])
            if len(row) > 6 and row[6].__class__ is int
            else f"{time_t}-{side_t}-{price_t}-{vol_t}"
        )
        vendor = {
            "native_symbol": native,
            "channelID": vendor_str(channel_id),
            "orderType": vendor_str(order_type),
            "misc": vendor_str(misc),
            "time": time_t,
            "api": "v1",
        }
        return trade_record(
            EXCHANGE, native, info, trade_id, ts, price, qty, side, ingest_us, vendor
        )

    def sequence_of(self, trade: TradeV3) -> int | None:
        tid = trade["trade_id"]
        return int(tid) if tid.isdigit() else None
