"""Binance adapter: pure parsing of real recorded frames and of the @trade protocol."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from k2.contracts.trade import TradeV3, message_id
from k2.paths import shared_dir
from k2_ingestors.exchanges import BinanceAdapter, Event, ParseError
from k2_ingestors.replay.capture import load_capture

RECORDED = shared_dir() / "data" / "recorded" / "cryptofeed_sample_data"
DERIVED = RECORDED / "derived_binance_aggtrades.jsonl"
NOW = 1_700_000_000_000_000


def trade_frame(**over: object) -> bytes:
    data = {
        "e": "trade",
        "E": 1700000000123,
        "s": "BTCUSDT",
        "t": 5000000001,
        "p": "60000.01000000",
        "q": "0.00150000",
        "T": 1700000000120,
        "m": True,
        "M": True,
    }
    data.update(over)
    return orjson.dumps({"stream": "btcusdt@trade", "data": data})


def one(adapter: BinanceAdapter, raw: bytes | str) -> TradeV3:
    out = adapter.parse(raw, NOW)
    assert isinstance(out, list) and len(out) == 1
    return out[0]


@pytest.fixture
def adapter() -> BinanceAdapter:
    return BinanceAdapter(["BTC/USDT", "ETH/USDT"])


def recorded_frames() -> list[dict[str, object]]:
    return [json.loads(line) for line in DERIVED.read_text().splitlines() if line.strip()]


# ---- the real recordings ------------------------------------------------------------


def test_every_recorded_aggtrade_parses_field_by_field(adapter: BinanceAdapter) -> None:
    frames = recorded_frames()
    assert len(frames) == 13
    for rec in frames:
        raw = str(rec["raw"])
        src = json.loads(raw)
        d = src["data"]
        t = one(adapter, raw.encode())
        assert t["trade_id"] == str(d["a"])
        assert t["message_id"] == message_id("BINANCE", d["s"], d["a"])
        assert t["exchange"] == "BINANCE"
        assert t["timestamp"] == d["T"] * 1000
        assert t["price"] == Decimal(d["p"]) and str(t["price"]) == d["p"]
        assert t["quantity"] == Decimal(d["q"]) and str(t["quantity"]) == d["q"]
        assert t["side"] == ("SELL" if d["m"] else "BUY")
        assert t["ingestion_timestamp"] == NOW
        assert t["symbol"] == f"{t['base_asset']}/{t['quote_currency']}"
        assert t["base_asset"] + t["quote_currency"] == d["s"]
        vd = t["vendor_data"]
        assert vd["native_symbol"] == d["s"]
        assert vd["stream"] == src["stream"]
        assert vd["e"] == "aggTrade" and vd["E"] == str(d["E"])
        assert (
            vd["f"] == str(d["f"])
            and vd["l"] == str(d["l"])
            and vd["M"] == ("true" if d["M"] else "false")
        )
        assert set(vd) == {"native_symbol", "stream", "e", "E", "f", "l", "M"}
        assert all(isinstance(v, str) for v in vd.values())


def test_recorded_symbols_split_into_canonical(adapter: BinanceAdapter) -> None:
    symbols = {one(adapter, str(r["raw"]).encode())["symbol"] for r in recorded_frames()}
    assert symbols == {"NKN/USDT", "LRC/BTC", "OMG/BUSD"}


def test_recorded_first_frame_exact_values(adapter: BinanceAdapter) -> None:
    t = one(adapter, str(recorded_frames()[0]["raw"]).encode())
    assert t["message_id"] == "BINANCE:NKNUSDT:15683430"
    assert t["price"] == Decimal("0.35280000") and t["quantity"] == Decimal("58.00000000")
    assert t["timestamp"] == 1633998523963000 and t["side"] == "BUY"


def test_recorded_sell_side_from_maker_flag(adapter: BinanceAdapter) -> None:
    sells = [
        one(adapter, str(r["raw"]).encode())
        for r in recorded_frames()
        if json.loads(str(r["raw"]))["data"]["m"]
    ]
    assert sells and all(t["side"] == "SELL" for t in sells)


def test_full_cryptofeed_captures_contain_only_these_trades(adapter: BinanceAdapter) -> None:
    total = 0
    for name in ("BINANCE.ws.1.0", "BINANCE_US.ws.1.0"):
        cap = load_capture(RECORDED / name, "binance")
        for f in cap.frames:
            total += len(adapter.parse(f.raw.encode(), NOW))  # type: ignore[arg-type]
    assert total == 13


def test_non_trade_recorded_frames_are_events_not_errors(adapter: BinanceAdapter) -> None:
    kinds = set()
    for line in (RECORDED / "BINANCE.ws.1.0").read_text().splitlines():
        if line[:1].isdigit() and '"stream"' in line:
            raw = line.split(": ", 1)[1]
            try:
                out = adapter.parse(raw, NOW)
            except ParseError:
                continue  # the recorder truncated a line
            if isinstance(out, Event):
                kinds.add(out.detail.get("e"))
    assert {"depthUpdate", "kline"} <= kinds


# ---- the @trade protocol ----------------------------------------------------------


def test_trade_frame_maps_every_field(adapter: BinanceAdapter) -> None:
    t = one(adapter, trade_frame())
    assert t == {
        "message_id": "BINANCE:BTCUSDT:5000000001",
        "trade_id": "5000000001",
        "symbol": "BTC/USDT",
        "exchange": "BINANCE",
        "timestamp": 1700000000120000,
        "price": Decimal("60000.01000000"),
        "quantity": Decimal("0.00150000"),
        "base_asset": "BTC",
        "quote_currency": "USDT",
        "side": "SELL",
        "ingestion_timestamp": NOW,
        "vendor_data": {
            "native_symbol": "BTCUSDT",
            "stream": "btcusdt@trade",
            "e": "trade",
            "E": "1700000000123",
            "M": "true",
        },
    }


def test_buyer_maker_false_is_taker_buy(adapter: BinanceAdapter) -> None:
    assert one(adapter, trade_frame(m=False))["side"] == "BUY"


def test_timestamp_is_trade_time_T_in_micros(adapter: BinanceAdapter) -> None:
    t = one(adapter, trade_frame(T=1, E=999))
    assert t["timestamp"] == 1000


def test_unknown_fields_kept_verbatim_as_strings(adapter: BinanceAdapter) -> None:
    t = one(adapter, trade_frame(b=88, a=50, X="MARKET", Z=None, w=[1, 2]))
    vd = t["vendor_data"]
    assert (
        vd["b"] == "88"
        and vd["a"] == "50"
        and vd["X"] == "MARKET"
        and vd["Z"] == "null"
        and vd["w"] == "[1,2]"
    )


def test_raw_stream_frame_without_wrapper(adapter: BinanceAdapter) -> None:
    raw = orjson.dumps(orjson.loads(trade_frame())["data"])
    t = one(adapter, raw)
    assert t["symbol"] == "BTC/USDT" and "stream" not in t["vendor_data"]


def test_decimal_precision_from_raw_text(adapter: BinanceAdapter) -> None:
    t = one(adapter, trade_frame(p="0.00000001", q="9999999999.99999999"))
    assert t["price"] == Decimal("0.00000001")
    assert t["quantity"] == Decimal("9999999999.99999999")
    assert t["quantity"].as_tuple().exponent == -8


def test_text_with_more_than_8_decimals_is_refused_not_rounded(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="price"):
        adapter.parse(trade_frame(p="1.000000001"), NOW)


def test_price_too_large_is_an_error(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="does not fit"):
        adapter.parse(trade_frame(p="12345678901.0"), NOW)


def test_zero_or_negative_price_still_parses(adapter: BinanceAdapter) -> None:
    """Validation is silver's job: an encodable but invalid trade goes to the trade topic."""
    assert one(adapter, trade_frame(p="0.00000000"))["price"] == 0
    assert one(adapter, trade_frame(p="-1.5"))["price"] == Decimal("-1.5")


def test_numeric_price_is_refused(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="strings"):
        adapter.parse(trade_frame(p=60000.01), NOW)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"stream":"x","data":{"e":"trade"', b"\xff\xfe"]
)
def test_malformed_json_is_a_clear_parse_error(adapter: BinanceAdapter, raw: bytes) -> None:
    with pytest.raises(ParseError, match="invalid JSON"):
        adapter.parse(raw, NOW)


def test_missing_field_names_it(adapter: BinanceAdapter) -> None:
    d = orjson.loads(trade_frame())
    del d["data"]["t"]
    with pytest.raises(ParseError, match="'t'"):
        adapter.parse(orjson.dumps(d), NOW)


def test_wrong_types_are_errors(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="wrong type"):
        adapter.parse(trade_frame(m="yes"), NOW)
    with pytest.raises(ParseError, match="wrong type"):
        adapter.parse(trade_frame(t="12"), NOW)


def test_array_frame_is_an_error(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="JSON object"):
        adapter.parse(b"[1,2,3]", NOW)


def test_server_shutdown_event(adapter: BinanceAdapter) -> None:
    ev = adapter.parse(b'{"e":"serverShutdown","E":1728640000000}', NOW)
    assert isinstance(ev, Event) and ev.kind == "shutdown" and ev.detail["E"] == 1728640000000
    wrapped = adapter.parse(b'{"event":{"e":"serverShutdown","E":1}}', NOW)
    assert isinstance(wrapped, Event) and wrapped.kind == "shutdown"
    combined = adapter.parse(b'{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}', NOW)
    assert isinstance(combined, Event) and combined.kind == "shutdown"


def test_subscribe_reply_and_error_are_events(adapter: BinanceAdapter) -> None:
    ok = adapter.parse(b'{"result":null,"id":1}', NOW)
    assert isinstance(ok, Event) and ok.kind == "subscribed"
    err = adapter.parse(b'{"error":{"code":2,"msg":"Invalid request"},"id":1}', NOW)
    assert isinstance(err, Event) and err.kind == "error"


def test_message_id_is_deterministic(adapter: BinanceAdapter) -> None:
    a, b = one(adapter, trade_frame()), BinanceAdapter(["BTC/USDT"]).parse(trade_frame(), NOW + 5)
    assert (
        isinstance(b, list)
        and a["message_id"] == b[0]["message_id"] == "BINANCE:BTCUSDT:5000000001"
    )


def test_stream_url_lists_lowercase_trade_streams(adapter: BinanceAdapter) -> None:
    assert (
        adapter.stream_url("wss://stream.binance.com:9443")
        == "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    )
    assert (
        adapter.stream_url("ws://127.0.0.1:1234/stream")
        == "ws://127.0.0.1:1234/stream?streams=btcusdt@trade/ethusdt@trade"
    )
    assert BinanceAdapter(["BTC/USDT"], stream="aggTrade").stream_names() == ["btcusdt@aggTrade"]
    assert adapter.subscribe_messages("wss://x/stream") == []


def test_configured_symbol_mapping_wins_over_heuristics() -> None:
    a = BinanceAdapter(["USDC/USDT"])
    t = a.parse(trade_frame(s="USDCUSDT"), NOW)
    assert isinstance(t, list) and t[0]["symbol"] == "USDC/USDT"


def test_unsplittable_symbol_is_an_error(adapter: BinanceAdapter) -> None:
    with pytest.raises(ParseError, match="cannot split"):
        adapter.parse(trade_frame(s="ABCXYZ"), NOW)


def test_protocol_facts() -> None:
    assert BinanceAdapter.max_connection_lifetime == 24 * 3600
    assert BinanceAdapter.sequential_ids
    assert BinanceAdapter.default_urls[0].startswith("wss://")
    with pytest.raises(ValueError):
        BinanceAdapter(["BTC/USDT"], stream="depth")


def test_recordings_exist() -> None:
    assert Path(DERIVED).is_file(), "shared/data/recorded is missing (K2_SHARED points elsewhere?)"


@pytest.mark.parametrize(
    "text",
    [
        "60000.01000000",
        "0.00000001",
        "9999999999.99999999",
        "0012.10000000",
        "-1.00000000",
        "1e2.00000000",
        "99999999999.9999999",
        "NaN",
        "1.5",
        "12345678901.00000000",
    ],
)
def test_decimal_fast_path_agrees_with_the_contract(text: str) -> None:
    from k2.contracts.trade import DecimalOutOfRange, to_decimal
    from k2_ingestors.exchanges.base import decimal_field

    try:
        want: object = to_decimal(text, "price")
    except DecimalOutOfRange:
        want = DecimalOutOfRange
    try:
        got: object = decimal_field(text, "price")
    except DecimalOutOfRange:
        got = DecimalOutOfRange
    assert str(got) == str(want)
