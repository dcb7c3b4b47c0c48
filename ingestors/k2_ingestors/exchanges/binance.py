"""Binance spot: combined `<symbol>@trade` streams (also reads `@aggTrade` frames).

    wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade
    {"stream":"btcusdt@trade","data":{"e":"trade","E":..,"s":"BTCUSDT","t":..,"p":"..","q":"..","T":..,"m":true,"M":true}}

`m` is "buyer is the maker", so m=true means the taker sold (SELL). `T` is the trade
time in milliseconds. Subscriptions live in the URL; the server pings every 20 s,
closes connections after 24 h and announces maintenance with a `serverShutdown` event.
Raw streams (`/ws/<stream>`) deliver the same payloads unwrapped.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import orjson

from k2.contracts.trade import TradeV3
from k2_ingestors.exchanges.base import (
    Event,
    ExchangeAdapter,
    ParseError,
    add_unmapped,
    trade_amounts,
    trade_record,
    vendor_str,
)

EXCHANGE = "BINANCE"
# Fields mapped onto v3 columns; everything else goes to vendor_data verbatim.
_MAPPED_TRADE = frozenset(("s", "t", "p", "q", "T", "m"))
_MAPPED_AGG = frozenset(("s", "a", "p", "q", "T", "m"))


class BinanceAdapter(ExchangeAdapter):
    name: ClassVar[str] = EXCHANGE
    default_urls: ClassVar[tuple[str, ...]] = (
        "wss://stream.binance.com:9443/stream",
        "wss://stream.binance.com:443/stream",
        "wss://data-stream.binance.vision/stream",
    )
    max_connection_lifetime: ClassVar[float | None] = 24 * 3600.0
    stale_after: ClassVar[float] = 60.0
    app_ping_interval: ClassVar[float | None] = None
    sequential_ids: ClassVar[bool] = True

    def __init__(self, symbols: Any = (), stream: str = "trade") -> None:
        if stream not in ("trade", "aggTrade"):
            raise ValueError(f"Binance stream must be 'trade' or 'aggTrade', not {stream!r}")
        self.stream = stream
        super().__init__(symbols)

    def native_symbol(self, canonical: str) -> str:
        return canonical.replace("/", "").upper()

    def stream_names(self) -> list[str]:
        return [f"{self.native_symbol(s).lower()}@{self.stream}" for s in self.symbols]

    def stream_url(self, base_url: str) -> str:
        """Point a base URL (with or without /stream) at the combined stream of our symbols."""
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/")
        if not path.endswith("/stream"):
            path = f"{path}/stream"
        query = "streams=" + "/".join(self.stream_names())
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    def parse(self, raw: bytes | str, ingest_us: int) -> list[TradeV3] | Event:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON: {exc}") from None
        if msg.__class__ is not dict:
            raise ParseError(f"expected a JSON object, got {type(msg).__name__}")
        stream = msg.get("stream")
        data = msg.get("data") if stream is not None else msg
        if data.__class__ is not dict:
            if "result" in msg and "id" in msg:  # reply to a SUBSCRIBE/LIST request
                return Event("subscribed", {"id": msg["id"], "result": msg["result"]})
            if "error" in msg:
                return Event("error", {"error": msg["error"], "id": msg.get("id")})
            raise ParseError("combined-stream frame without an object 'data'")
        kind = data.get("e")
        if kind == "trade":
            return [self._trade(data, stream, ingest_us, _MAPPED_TRADE, "t")]
        if kind == "aggTrade":
            return [self._trade(data, stream, ingest_us, _MAPPED_AGG, "a")]
        if kind == "serverShutdown" or (
            kind is None
            and isinstance(data.get("event"), dict)
            and data["event"].get("e") == "serverShutdown"
        ):
            ev = data if kind else data["event"]
            return Event("shutdown", {"E": ev.get("E")})
        if "result" in data and "id" in data:
            return Event("subscribed", {"id": data["id"], "result": data["result"]})
        if "error" in data:
            return Event("error", {"error": data["error"], "id": data.get("id")})
        if kind is None:
            raise ParseError("frame has no event type 'e'")
        return Event("ignored", {"e": kind})

    def _trade(
        self,
        d: dict[str, Any],
        stream: str | None,
        ingest_us: int,
        mapped: frozenset[str],
        id_key: str,
    ) -> TradeV3:
        try:
            native = d["s"]
            tid = d[id_key]
            price_text = d["p"]
            qty_text = d["q"]
            ts_ms = d["T"]
            maker = d["m"]
        except KeyError as exc:
            raise ParseError(f"{d.get('e')} frame lacks field {exc.args[0]!r}") from None
        if (
            native.__class__ is not str
            or tid.__class__ is not int
            or ts_ms.__class__ is not int
            or maker.__class__ is not bool
        ):
            raise ParseError(
                f"{d.get('e')} frame has a field of the wrong type (s={native!r}, {id_key}={tid!r}, T={ts_ms!r}, m={maker!r})"
            )
        if price_text.__class__ is not str or qty_text.__class__ is not str:
            raise ParseError(f"price/quantity must be strings, got p={price_text!r} q={qty_text!r}")
        info = self.symbol_info(native)
        price, qty = trade_amounts(price_text, qty_text, native, id_key, tid)
        if (
            id_key == "t"
            and len(d) == 9
            and stream is not None
            and "E" in d
            and "M" in d
            and "e" in d
        ):
            # the usual @trade payload: its three unmapped fields, without the generic loop
            e_time, best = d["E"], d["M"]
            vendor = {
                "native_symbol": native,
                "stream": stream,
                "e": "trade",
                "E": str(e_time) if e_time.__class__ is int else vendor_str(e_time),
                "M": "true" if best is True else vendor_str(best),
            }
        else:
            vendor = {"native_symbol": native}
            if stream is not None:
                vendor["stream"] = stream
            add_unmapped(vendor, d, mapped)
        side = "SELL" if maker else "BUY"
        return trade_record(
            EXCHANGE, native, info, str(tid), ts_ms * 1000, price, qty, side, ingest_us, vendor
        )
