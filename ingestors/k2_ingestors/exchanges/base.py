"""The declarative exchange adapter: protocol facts as data, parsing as a pure function.

An adapter turns the raw bytes of one WebSocket frame into trade v3 records (a list,
possibly empty) or a non-trade `Event` (ack, heartbeat, status, shutdown notice...),
and raises `ParseError` for anything it cannot read. It never does I/O: the resilient
client (`k2_ingestors.wsclient`) drives the connection and calls it.

Adding an exchange is one file: subclass `ExchangeAdapter`, fill the class attributes
(name, default endpoints, limits), implement `stream_url`, `subscribe_messages` and
`parse`, and register it in `k2_ingestors.exchanges.ADAPTERS`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from k2.contracts.trade import DecimalOutOfRange, TradeV3, message_id, to_decimal

# Quote assets tried, longest first, when a native symbol like "NKNUSDT" has to be
# split without a configured mapping (recordings, symbols nobody asked for).
KNOWN_QUOTES: tuple[str, ...] = tuple(
    sorted(
        (
            "USDT",
            "USDC",
            "FDUSD",
            "BUSD",
            "TUSD",
            "USDP",
            "DAI",
            "USD",
            "EUR",
            "GBP",
            "TRY",
            "BRL",
            "JPY",
            "AUD",
            "CAD",
            "CHF",
            "BTC",
            "XBT",
            "ETH",
            "BNB",
            "DOGE",
            "TRX",
            "XRP",
        ),
        key=len,
        reverse=True,
    )
)

EVENT_KINDS = (
    "subscribed",
    "unsubscribed",
    "heartbeat",
    "status",
    "pong",
    "shutdown",
    "error",
    "info",
    "ignored",
)


class ParseError(ValueError):
    """A frame (or part of one) could not be turned into trades.

    `trades` holds the trades of the same frame that were fine (a batched frame with
    one bad trade still yields the others); the raw frame goes to the dead-letter topic.
    """

    def __init__(self, reason: str, trades: Sequence[TradeV3] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.trades: list[TradeV3] = list(trades)


@dataclass(slots=True)
class Event:
    """A non-trade frame, classified. `detail` carries what the client may need."""

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    canonical: str  # BASE/QUOTE
    native: str  # the exchange's spelling
    base: str
    quote: str


def split_native(native: str, aliases: dict[str, str] | None = None) -> tuple[str, str]:
    """Split "BTCUSDT" or "XBT/USD" into canonical (base, quote), applying aliases (XBT->BTC)."""
    aliases = aliases or {}
    if "/" in native:
        base, _, quote = native.partition("/")
    else:
        up = native.upper()
        for q in KNOWN_QUOTES:
            if up.endswith(q) and len(up) > len(q):
                base, quote = up[: -len(q)], q
                break
        else:
            raise ParseError(f"cannot split native symbol {native!r} into base/quote")
    base, quote = base.upper(), quote.upper()
    return aliases.get(base, base), aliases.get(quote, quote)


def micros_from_seconds_text(text: str) -> int:
    """'1618678142.557535' -> 1618678142557535, exactly from the text (no float)."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a unix timestamp in seconds: {text!r}")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


_DAYS_CACHE: dict[str, int] = {}


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_SECONDS_CACHE: dict[str, int] = {}


def micros_from_rfc3339(text: str) -> int:
    """'2026-03-15T11:26:23.023215Z' -> epoch micros, without datetime objects.

    Accepts a 'Z' or '+00:00' suffix and 0-9 fractional digits (truncated to micros).
    Kraken's usual spelling (microseconds, 'Z') is a cached lookup of its whole seconds.
    """
    if len(text) == 27 and text[19] == "." and text[26] == "Z":
        secs = _SECONDS_CACHE.get(text[:19])
        frac = text[20:26]
        if secs is not None and frac.isdigit():
            return secs + int(frac)
        value = _rfc3339_slow(text)
        if len(_SECONDS_CACHE) > 100_000:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[text[:19]] = value - value % 1_000_000
        return value
    return _rfc3339_slow(text)


def _rfc3339_slow(text: str) -> int:
    if (
        len(text) < 20
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "Tt "
        or text[13] != ":"
        or text[16] != ":"
    ):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    date = text[:10]
    days = _DAYS_CACHE.get(date)
    if days is None:
        y, m, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
        if not (1 <= m <= 12 and 1 <= d <= 31):
            raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
        days = _days_from_civil(y, m, d)
        if len(_DAYS_CACHE) > 4096:
            _DAYS_CACHE.clear()
        _DAYS_CACHE[date] = days
    hh, mi, ss = int(text[11:13]), int(text[14:16]), int(text[17:19])
    rest = text[19:]
    frac_us = 0
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac_us = int((rest[1:i] + "000000")[:6])
        rest = rest[i:]
    if rest in ("Z", "z", "+00:00", "-00:00"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        sign = 1 if rest[0] == "+" else -1
        offset = sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
    else:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    return ((days * 86400 + hh * 3600 + mi * 60 + ss - offset) * 1_000_000) + frac_us


def vendor_str(value: Any) -> str:
    """A vendor field kept verbatim as a string (JSON spelling for booleans and null)."""
    if value.__class__ is str:
        return str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, Decimal)):
        return str(value)
    import orjson

    return orjson.dumps(value, default=str).decode()


def decimal_field(value: Any, name: str) -> Decimal:
    """Exact decimal(18,8) from exchange text (or a Decimal from parse_float); never float.

    Fast path for the common exchange spelling with exactly 8 decimals ("60000.01000000",
    at most 10 integer digits): Decimal(text) is then already exact at scale 8 and in
    range, which is what `to_decimal` would return. Everything else goes through it.
    """
    if value.__class__ is str and 10 <= len(value) <= 19 and value[-9] == "." and value[0] != "-":
        try:
            d = Decimal(value)
        except InvalidOperation:
            pass
        else:
            if value[0].isdigit() and value[-1].isdigit():
                return d
    if value.__class__ is float:
        raise DecimalOutOfRange(f"{name}={value!r} arrived as a float; refusing to round")
    if value.__class__ is bool:
        raise DecimalOutOfRange(f"{name}={value!r} is not a decimal number")
    return to_decimal(value, name)


def trade_amounts(
    price: Any, quantity: Any, native: str, id_name: str = "", trade_id: Any = None
) -> tuple[Decimal, Decimal]:
    """Exact (price, quantity) of one trade; ParseError naming the trade when out of range.

    The error reads "<native> <id_name>=<trade_id>: ..." (or "<native>: ..." without an
    id_name); it is only formatted on failure.
    """
    try:
        return decimal_field(price, "price"), decimal_field(quantity, "quantity")
    except DecimalOutOfRange as exc:
        where = f"{native} {id_name}={trade_id}" if id_name else native
        raise ParseError(f"{where}: {exc}") from None


def add_unmapped(vendor: dict[str, str], fields: dict[str, Any], mapped: frozenset[str]) -> None:
    """Copy the fields of a native trade that no v3 column took into `vendor`, as strings."""
    for k, v in fields.items():
        if k not in mapped:
            vendor[k] = v if v.__class__ is str else vendor_str(v)


def trade_record(
    exchange: str,
    native: str,
    info: SymbolInfo,
    trade_id: str,
    timestamp: int,
    price: Decimal,
    quantity: Decimal,
    side: str,
    ingest_us: int,
    vendor: dict[str, str],
) -> TradeV3:
    """The trade v3 record of one parsed exchange trade (the message id derives from it)."""
    return {
        "message_id": message_id(exchange, native, trade_id),
        "trade_id": trade_id,
        "symbol": info.canonical,
        "exchange": exchange,
        "timestamp": timestamp,
        "price": price,
        "quantity": quantity,
        "base_asset": info.base,
        "quote_currency": info.quote,
        "side": side,
        "ingestion_timestamp": ingest_us,
        "vendor_data": vendor,
    }


def now_micros() -> int:
    return time.time_ns() // 1000


class ExchangeAdapter:
    """Base class: protocol facts (class attributes) + pure parsing (methods)."""

    #: upper-case exchange name, one of k2.contracts.trade.EXCHANGES
    name: ClassVar[str] = ""
    #: endpoints tried in order (failover); the URL may be rewritten by `stream_url`
    default_urls: ClassVar[tuple[str, ...]] = ()
    #: the server closes a connection after this long (seconds); None = no limit
    max_connection_lifetime: ClassVar[float | None] = None
    #: the client reconnects when nothing arrived for this long (seconds)
    stale_after: ClassVar[float] = 60.0
    #: application-level ping interval (seconds); None = the protocol has none
    app_ping_interval: ClassVar[float | None] = None
    #: trade ids are sequential integers per symbol (gap detection, watermark dedup)
    sequential_ids: ClassVar[bool] = True
    #: asset aliases applied to native symbols (XBT -> BTC)
    aliases: ClassVar[dict[str, str]] = {}

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._by_native: dict[str, SymbolInfo] = {}
        self._by_canonical: dict[str, SymbolInfo] = {}
        for canonical in self.symbols:
            base, _, quote = canonical.partition("/")
            if not base or not quote:
                raise ValueError(f"{canonical!r} is not a canonical BASE/QUOTE symbol")
            info = SymbolInfo(canonical, self.native_symbol(canonical), base, quote)
            self._by_native[info.native] = info
            self._by_canonical[canonical] = info
        self._ping_id = 0

    # ---- protocol (override) -------------------------------------------------
    def native_symbol(self, canonical: str) -> str:
        """The exchange's spelling of a canonical symbol."""
        raise NotImplementedError

    def stream_url(self, base_url: str) -> str:
        """The URL to connect to for `self.symbols` (e.g. Binance puts streams in the query)."""
        return base_url

    def subscribe_messages(self, url: str) -> list[str]:
        """Frames to send after connecting (Kraken subscribes by message, Binance by URL)."""
        return []

    def app_ping(self, url: str) -> str | None:
        """An application-level ping frame for a connection to `url`, if the protocol has one."""
        return None

    def parse(self, raw: bytes | str, ingest_us: int) -> list[TradeV3] | Event:
        """Raw frame -> trades (possibly several) or an Event; ParseError when unreadable."""
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------
    def symbol_info(self, native: str) -> SymbolInfo:
        info = self._by_native.get(native)
        if info is None:
            base, quote = split_native(native, self.aliases)
            info = SymbolInfo(f"{base}/{quote}", native, base, quote)
            if len(self._by_native) < 10_000:
                self._by_native[native] = info
        return info

    def sequence_of(self, trade: TradeV3) -> int | None:
        """The trade id as an integer for gap detection/dedup, when ids are sequential."""
        if not self.sequential_ids:
            return None
        tid = trade["trade_id"]
        return int(tid) if tid.isdigit() else None


def decimal_or_error(value: Any, name: str) -> Decimal:
    try:
        return decimal_field(value, name)
    except (InvalidOperation, TypeError) as exc:  # pragma: no cover - to_decimal maps these
        raise DecimalOutOfRange(f"{name}={value!r}: {exc}") from None
