"""Kraken adapter: v2 (JSON numbers as Decimal, batched frames) and legacy v1 arrays."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import orjson
import pytest

from k2.contracts.trade import TradeV3, message_id
from k2.paths import shared_dir
from k2_ingestors.exchanges import Event, KrakenAdapter, ParseError
from k2_ingestors.exchanges.base import micros_from_rfc3339, micros_from_seconds_text
from k2_ingestors.replay.capture import load_capture

RECORDED = shared_dir() / "data" / "recorded"
V2_REAL = RECORDED / "tomlin256_krakenapi" / "kraken_v2_real_frames_2026-03-15.jsonl"
V1_CAPTURE = RECORDED / "cryptofeed_sample_data" / "KRAKEN.ws.48.0"
V1_DERIVED = RECORDED / "cryptofeed_sample_data" / "derived_kraken_v1_trades.jsonl"
NOW = 1_700_000_000_000_000


def v2_trade(**over: object) -> dict[str, object]:
    t: dict[str, object] = {
        "symbol": "BTC/USD",
        "side": "buy",
        "price": 60000.1,
        "qty": 0.5,
        "ord_type": "limit",
        "trade_id": 100,
        "timestamp": "2026-03-15T11:26:23.023215Z",
    }
    t.update(over)
    return t


def v2_frame(*trades: dict[str, object], kind: str = "update") -> bytes:
    return orjson.dumps({"channel": "trade", "type": kind, "data": list(trades) or [v2_trade()]})


@pytest.fixture
def adapter() -> KrakenAdapter:
    return KrakenAdapter(["BTC/USD", "ETH/USD"])


def trades(adapter: KrakenAdapter, raw: bytes | str) -> list[TradeV3]:
    out = adapter.parse(raw, NOW)
    assert isinstance(out, list)
    return out


# ---- real v2 frames (2026-03-15) ------------------------------------------------------


def test_real_v2_frames_classified(adapter: KrakenAdapter) -> None:
    lines = V2_REAL.read_text().splitlines()
    kinds = [adapter.parse(line.encode(), NOW) for line in lines]
    assert (
        isinstance(kinds[0], Event)
        and kinds[0].kind == "status"
        and kinds[0].detail["system"] == "online"
    )
    assert isinstance(kinds[1], Event) and kinds[1].kind == "heartbeat"
    assert (
        isinstance(kinds[2], Event)
        and kinds[2].kind == "subscribed"
        and kinds[2].detail["symbol"] == "BTC/USD"
    )
    assert isinstance(kinds[3], list) and len(kinds[3]) == 1


def test_real_v2_trade_field_by_field(adapter: KrakenAdapter) -> None:
    raw = V2_REAL.read_text().splitlines()[3]
    (t,) = trades(adapter, raw)
    src = json.loads(raw, parse_float=Decimal)["data"][0]
    assert t["trade_id"] == "97184416" == str(src["trade_id"])
    assert t["message_id"] == message_id("KRAKEN", "BTC/USD", 97184416) == "KRAKEN:BTC/USD:97184416"
    assert t["symbol"] == "BTC/USD" and t["base_asset"] == "BTC" and t["quote_currency"] == "USD"
    assert t["exchange"] == "KRAKEN"
    assert t["price"] == Decimal("71749.0") and t["quantity"] == Decimal("0.00220616")
    assert t["side"] == "SELL"
    expected = dt.datetime(2026, 3, 15, 11, 26, 23, 23215, tzinfo=dt.UTC)
    assert t["timestamp"] == int(expected.timestamp()) * 1_000_000 + expected.microsecond
    assert t["ingestion_timestamp"] == NOW
    assert t["vendor_data"] == {"native_symbol": "BTC/USD", "type": "update", "ord_type": "limit"}


# ---- real v1 frames (2021-04-17) -------------------------------------------------------


def test_every_recorded_v1_trade_parsed_field_by_field(adapter: KrakenAdapter) -> None:
    rows = [json.loads(line) for line in V1_DERIVED.read_text().splitlines() if line.strip()]
    total = 0
    for rec in rows:
        src = json.loads(rec["raw"])
        out = trades(adapter, rec["raw"])
        assert len(out) == len(src[1])
        for t, row in zip(out, src[1], strict=True):
            price, volume, ts, side, order_type, misc = row
            assert (
                str(t["price"]) == price
                if len(price.split(".")[1]) == 8
                else t["price"] == Decimal(price)
            )
            assert t["quantity"] == Decimal(volume)
            whole, frac = ts.split(".")
            assert t["timestamp"] == int(whole) * 1_000_000 + int(frac)
            assert t["side"] == {"b": "BUY", "s": "SELL"}[side]
            assert t["symbol"] == src[3]  # XMR/USD and SC/EUR need no alias
            assert t["vendor_data"]["native_symbol"] == src[3]
            assert t["vendor_data"]["channelID"] == str(src[0])
            assert t["vendor_data"]["orderType"] == order_type and t["vendor_data"]["misc"] == misc
            assert t["message_id"] == message_id("KRAKEN", src[3], t["trade_id"])
            total += 1
    assert total == 10


def test_v1_capture_events_and_trades(adapter: KrakenAdapter) -> None:
    kinds: dict[str, int] = {}
    n_trades = 0
    for line in V1_CAPTURE.read_text().splitlines()[1:]:
        if ": " not in line:
            continue
        raw = line.split(": ", 1)[1]
        out = adapter.parse(raw, NOW)
        if isinstance(out, list):
            n_trades += len(out)
        else:
            kinds[out.kind] = kinds.get(out.kind, 0) + 1
    assert n_trades == 10
    assert kinds["status"] == 1 and kinds["subscribed"] == 10 and kinds["heartbeat"] > 20
    cap = load_capture(V1_CAPTURE, "kraken")
    assert cap.trade_count == 10 and cap.channel_ids["XMR/USD"] == 993


def test_v1_batched_frame_emits_every_trade(adapter: KrakenAdapter) -> None:
    raw = '[1921,[["0.042980","8500.00000000","1618678155.718950","b","m",""],["0.043000","2383.16665529","1618678155.720582","b","m",""]],"trade","SC/EUR"]'
    out = trades(adapter, raw)
    assert [t["quantity"] for t in out] == [Decimal("8500"), Decimal("2383.16665529")]
    assert out[0]["message_id"] != out[1]["message_id"]


def test_v1_xbt_is_btc(adapter: KrakenAdapter) -> None:
    (t,) = trades(
        adapter,
        '[465,[["50000.10000","0.01000000","1618678145.715785","s","l",""]],"trade","XBT/USD"]',
    )
    assert t["symbol"] == "BTC/USD" and t["base_asset"] == "BTC"
    assert t["vendor_data"]["native_symbol"] == "XBT/USD"
    assert t["message_id"].startswith("KRAKEN:XBT/USD:")
    (d,) = trades(adapter, '[1,[["0.1","1","1.0","b","l",""]],"trade","XDG/XBT"]')
    assert d["symbol"] == "DOGE/BTC"


def test_v1_derived_id_is_deterministic(adapter: KrakenAdapter) -> None:
    raw = '[993,[["354.11000000","0.89594024","1618678142.557535","s","l",""]],"trade","XMR/USD"]'
    a, b = trades(adapter, raw)[0], trades(KrakenAdapter(), raw)[0]
    assert a["message_id"] == b["message_id"]
    assert adapter.sequence_of(a) is None  # not sequential: deduplicated by message id


def test_v1_trade_id_used_when_present(adapter: KrakenAdapter) -> None:
    (t,) = trades(
        adapter, '[993,[["354.1","0.8","1618678142.557535","s","l","",12345]],"trade","XMR/USD"]'
    )
    assert t["trade_id"] == "12345" and adapter.sequence_of(t) == 12345


def test_v1_malformed_rows(adapter: KrakenAdapter) -> None:
    with pytest.raises(ParseError, match="not a trade"):
        adapter.parse('[1,[],"book","XBT/USD"]', NOW)
    with pytest.raises(ParseError, match="unknown side"):
        adapter.parse('[1,[["1.0","1.0","1.0","x","l",""]],"trade","XBT/USD"]', NOW)
    with pytest.raises(ParseError, match="strings"):
        adapter.parse('[1,[[1.0,"1.0","1.0","b","l",""]],"trade","XBT/USD"]', NOW)


# ---- v2 protocol --------------------------------------------------------------------


def test_v2_batched_frame_emits_every_trade(adapter: KrakenAdapter) -> None:
    frame = v2_frame(*(v2_trade(trade_id=100 + i, price=60000 + i) for i in range(50)))
    out = trades(adapter, frame)
    assert [t["trade_id"] for t in out] == [str(100 + i) for i in range(50)]
    assert len({t["message_id"] for t in out}) == 50


def test_v2_snapshot_frames_are_trades_too(adapter: KrakenAdapter) -> None:
    (t,) = trades(adapter, v2_frame(v2_trade(), kind="snapshot"))
    assert t["vendor_data"]["type"] == "snapshot"


def test_v2_numbers_parsed_from_text_not_float(adapter: KrakenAdapter) -> None:
    raw = b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":0.1,"qty":1.00000001,"ord_type":"market","trade_id":1,"timestamp":"2026-03-15T11:26:23Z"}]}'
    (t,) = trades(adapter, raw)
    assert t["price"] == Decimal("0.1")  # float(0.1) would be 0.1000000000000000055...
    assert t["quantity"] == Decimal("1.00000001")
    assert t["price"].as_tuple().exponent == -8


def test_v2_exponent_notation(adapter: KrakenAdapter) -> None:
    (t,) = trades(
        adapter,
        b'{"channel":"trade","data":[{"symbol":"ETH/USD","side":"buy","price":3e3,"qty":1e-05,"trade_id":2,"timestamp":"2026-03-15T11:26:23.5Z"}]}',
    )
    assert t["price"] == Decimal("3000") and t["quantity"] == Decimal("0.00001")
    assert t["timestamp"] % 1_000_000 == 500_000


def test_v2_too_many_decimals_goes_to_error_but_keeps_good_trades(adapter: KrakenAdapter) -> None:
    frame = v2_frame(
        v2_trade(trade_id=1), v2_trade(trade_id=2, qty=0.000000001), v2_trade(trade_id=3)
    )
    with pytest.raises(ParseError) as err:
        adapter.parse(frame, NOW)
    assert "trade[1]" in err.value.reason and "quantity" in err.value.reason
    assert [t["trade_id"] for t in err.value.trades] == ["1", "3"]


def test_v2_negative_price_still_parses(adapter: KrakenAdapter) -> None:
    (t,) = trades(adapter, v2_frame(v2_trade(price=-1)))
    assert t["price"] == Decimal("-1")


def test_v2_missing_and_wrong_fields(adapter: KrakenAdapter) -> None:
    bad = v2_trade()
    del bad["trade_id"]
    with pytest.raises(ParseError, match="trade_id"):
        adapter.parse(v2_frame(bad), NOW)
    with pytest.raises(ParseError, match="unknown side"):
        adapter.parse(v2_frame(v2_trade(side="hold")), NOW)
    with pytest.raises(ParseError, match="wrong type"):
        adapter.parse(v2_frame(v2_trade(trade_id="7")), NOW)
    with pytest.raises(ParseError, match="RFC 3339"):
        adapter.parse(v2_frame(v2_trade(timestamp="yesterday at noon")), NOW)
    with pytest.raises(ParseError, match="data"):
        adapter.parse(b'{"channel":"trade","type":"update"}', NOW)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"channel":"trade","data":[{"symbol":"BTC/USD","price":', b"\xff", b"nul"]
)
def test_v2_malformed_json_is_a_clear_error(adapter: KrakenAdapter, raw: bytes) -> None:
    with pytest.raises(ParseError, match="invalid JSON"):
        adapter.parse(raw, NOW)


def test_v2_control_messages(adapter: KrakenAdapter) -> None:
    pong = adapter.parse(b'{"method":"pong","req_id":7,"time_in":"x","time_out":"y"}', NOW)
    assert isinstance(pong, Event) and pong.kind == "pong" and pong.detail["req_id"] == 7
    err = adapter.parse(
        b'{"error":"Currency pair not supported X/Y","method":"subscribe","success":false,"symbol":"X/Y"}',
        NOW,
    )
    assert isinstance(err, Event) and err.kind == "error" and err.detail["symbol"] == "X/Y"
    maint = adapter.parse(
        b'{"channel":"status","data":[{"system":"maintenance"}],"type":"update"}', NOW
    )
    assert isinstance(maint, Event) and maint.detail["system"] == "maintenance"
    other = adapter.parse(b'{"channel":"book","data":[]}', NOW)
    assert isinstance(other, Event) and other.kind == "ignored"
    with pytest.raises(ParseError):
        adapter.parse(b'{"hello":1}', NOW)


def test_subscribe_messages_v2_and_v1(adapter: KrakenAdapter) -> None:
    (v2,) = adapter.subscribe_messages("wss://ws.kraken.com/v2")
    assert json.loads(v2) == {
        "method": "subscribe",
        "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
        "req_id": 1,
    }
    (v1,) = adapter.subscribe_messages("wss://ws.kraken.com")
    assert json.loads(v1) == {
        "event": "subscribe",
        "pair": ["XBT/USD", "ETH/USD"],
        "subscription": {"name": "trade"},
    }


def test_app_level_ping(adapter: KrakenAdapter) -> None:
    ping = adapter.app_ping("wss://ws.kraken.com/v2")
    assert ping is not None and json.loads(ping)["method"] == "ping"
    v1 = adapter.app_ping("wss://ws.kraken.com")
    assert v1 is not None and json.loads(v1)["event"] == "ping"
    assert KrakenAdapter.app_ping_interval and KrakenAdapter.stale_after <= 15


def test_rfc3339_and_seconds_parsing() -> None:
    for text in (
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999999Z",
        "2026-03-15T11:26:23.023215Z",
        "2000-03-01T00:00:00.1+00:00",
    ):
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert micros_from_rfc3339(text) == int(parsed.timestamp()) * 1_000_000 + parsed.microsecond
    assert micros_from_rfc3339("2026-03-15T12:26:23.5+01:00") == micros_from_rfc3339(
        "2026-03-15T11:26:23.5Z"
    )
    assert micros_from_rfc3339("2026-03-15T11:26:23.123456789Z") % 1_000_000 == 123456
    assert micros_from_seconds_text("1618678142.5") == 1618678142_500000
    with pytest.raises(ValueError):
        micros_from_seconds_text("-1.0")


def test_v2_sequence_ids(adapter: KrakenAdapter) -> None:
    (t,) = trades(adapter, v2_frame(v2_trade(trade_id=42)))
    assert adapter.sequence_of(t) == 42
