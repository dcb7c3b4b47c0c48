"""The replay servers speak the exchanges' protocols: paths, subscriptions, acks, limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from k2.paths import shared_dir
from k2_ingestors.exchanges import BinanceAdapter, KrakenAdapter
from k2_ingestors.replay import cli as replay_cli
from k2_ingestors.replay.server import Fault, ReplayServer, ServerThread
from k2_ingestors.replay.synthetic import Tape

pytestmark = pytest.mark.timeout(60)
RECORDED = shared_dir() / "data" / "recorded"


async def recv_json(ws: Any, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_tape_is_deterministic_and_sequential_per_symbol() -> None:
    a, b = (
        Tape(["BTC/USDT", "ETH/USDT"], seed=5, batch=3),
        Tape(["BTC/USDT", "ETH/USDT"], seed=5, batch=3),
    )
    assert [a.trade(i) for i in range(100)] == [b.trade(i) for i in range(100)]
    assert Tape(["BTC/USDT"], seed=6).trade(0) != Tape(["BTC/USDT"], seed=5).trade(0)
    btc = [a.trade(i).trade_id for i in range(300) if a.trade(i).symbol == "BTC/USDT"]
    assert btc == list(range(btc[0], btc[0] + len(btc)))
    for i in range(1000):
        assert a.index_of(a.symbol_of(i), a.seq_of(i)) == i
    t = a.trade(7)
    assert len(t.price.split(".")[1]) == 8 and float(t.price) > 1000 and float(t.qty) > 0


def test_binance_combined_stream_frames_parse_to_the_tape() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=5000, count=20, seed=3) as srv:
            adapter = BinanceAdapter(["BTC/USDT", "ETH/USDT"])
            async with websockets.connect(adapter.stream_url(srv.url)) as ws:
                got: list[Any] = []
                for _ in range(20):
                    msg = await asyncio.wait_for(ws.recv(), 5)
                    got += adapter.parse(msg, 0)  # type: ignore[arg-type]
            want = srv.expected_trades()
            assert [
                (t["symbol"], t["trade_id"], str(t["price"]), str(t["quantity"]), t["side"])
                for t in got
            ] == [(w.symbol, str(w.trade_id), w.price, w.qty, w.side) for w in want]

    run(main())


def test_binance_paths_and_subscription_methods() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=100, count=1000) as srv:
            with pytest.raises(InvalidStatus) as err:
                async with websockets.connect(srv.base_url + "/nope"):
                    pass
            assert err.value.response.status_code == 404
            with pytest.raises(InvalidStatus):
                async with websockets.connect(srv.base_url + "/stream"):
                    pass
            async with websockets.connect(srv.base_url + "/ws") as ws:
                await ws.send(
                    json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
                )
                assert await recv_json(ws) == {"result": None, "id": 1}
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
                reply = await recv_json(ws)
                while "id" not in reply:  # trades may arrive first
                    reply = await recv_json(ws)
                assert reply == {"result": ["btcusdt@trade"], "id": 2}
                frame = await recv_json(ws)
                assert frame["e"] == "trade" and frame["s"] == "BTCUSDT"  # raw stream: unwrapped

    run(main())


def test_binance_incoming_message_limit_closes_connection() -> None:
    async def main() -> None:
        async with (
            ReplayServer("binance", rate=1, count=1) as srv,
            websockets.connect(srv.url + "?streams=btcusdt@trade") as ws,
        ):
            with pytest.raises(ConnectionClosed) as err:
                for i in range(10):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert err.value.rcvd is not None and err.value.rcvd.code == 1008

    run(main())


def test_binance_connection_lifetime_and_server_shutdown() -> None:
    async def main() -> None:
        async with (
            ReplayServer("binance", rate=200, count=10_000, max_lifetime=0.5) as srv,
            websockets.connect(srv.url + "?streams=btcusdt@trade") as ws,
        ):
            with pytest.raises(ConnectionClosed) as err:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert err.value.rcvd is not None and err.value.rcvd.code == 1001
        async with (
            ReplayServer("binance", rate=200, count=10_000, shutdown_grace=0.2) as srv,
            websockets.connect(srv.url + "?streams=btcusdt@trade") as ws,
        ):
            await recv_json(ws)
            srv.server_shutdown()
            seen = []
            with pytest.raises(ConnectionClosed):
                while True:
                    seen.append(await recv_json(ws))
            assert any(m.get("e") == "serverShutdown" for m in seen)

    run(main())


def test_kraken_v2_handshake_acks_errors_ping_heartbeat() -> None:
    async def main() -> None:
        async with (
            ReplayServer("kraken", rate=5, count=0, heartbeat_interval=0.2) as srv,
            websockets.connect(srv.url) as ws,
        ):
            status = await recv_json(ws)
            assert (
                status["channel"] == "status"
                and status["data"][0]["system"] == "online"
                and status["data"][0]["api_version"] == "v2"
            )
            await ws.send(
                json.dumps(
                    {
                        "method": "subscribe",
                        "params": {
                            "channel": "trade",
                            "symbol": ["BTC/USD", "DOGE/XYZ"],
                            "snapshot": False,
                        },
                        "req_id": 9,
                    }
                )
            )
            ack, err = await recv_json(ws), await recv_json(ws)
            assert (
                ack["success"] is True
                and ack["result"] == {"channel": "trade", "snapshot": False, "symbol": "BTC/USD"}
                and ack["req_id"] == 9
            )
            assert err["success"] is False and "DOGE/XYZ" in err["error"]
            await ws.send(json.dumps({"method": "ping", "req_id": 10}))
            msgs = [await recv_json(ws) for _ in range(3)]
            assert {"method": "pong", "req_id": 10} in [
                {k: m.get(k) for k in ("method", "req_id")} for m in msgs
            ]
            assert {"channel": "heartbeat"} in msgs

    run(main())


def test_kraken_v2_batched_updates_and_snapshot() -> None:
    async def main() -> None:
        async with ReplayServer("kraken", rate=2000, count=60, batch=4, symbols=["BTC/USD"]) as srv:
            adapter = KrakenAdapter(["BTC/USD"])
            async with websockets.connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(adapter.subscribe_messages(srv.url)[0])
                await recv_json(ws)
                trades: list[Any] = []
                sizes = []
                while len(trades) < 60:
                    out = adapter.parse(await asyncio.wait_for(ws.recv(), 5), 0)
                    if isinstance(out, list):
                        sizes.append(len(out))
                        trades += out
            assert max(sizes) > 1  # really batched
            assert [int(t["trade_id"]) for t in trades] == [
                w.trade_id for w in srv.expected_trades()
            ]
            # a second client asking for a snapshot gets the last trades first
            async with websockets.connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(
                    json.dumps(
                        {
                            "method": "subscribe",
                            "params": {"channel": "trade", "symbol": ["BTC/USD"]},
                        }
                    )
                )
                await recv_json(ws)
                snap = await recv_json(ws)
                assert snap["type"] == "snapshot" and len(snap["data"]) == 50
                assert snap["data"][-1]["trade_id"] == int(trades[-1]["trade_id"])

    run(main())


def test_kraken_v1_protocol_with_xbt() -> None:
    async def main() -> None:
        async with ReplayServer("kraken", rate=500, count=10) as srv:
            adapter = KrakenAdapter(["BTC/USD", "ETH/USD"])
            async with websockets.connect(srv.v1_url) as ws:
                assert (await recv_json(ws))["event"] == "systemStatus"
                await ws.send(adapter.subscribe_messages(srv.v1_url)[0])
                st = [await recv_json(ws), await recv_json(ws)]
                assert {s["pair"] for s in st} == {"XBT/USD", "ETH/USD"} and all(
                    s["status"] == "subscribed" for s in st
                )
                frame = await asyncio.wait_for(ws.recv(), 5)
                out = adapter.parse(frame, 0)
                assert (
                    isinstance(out, list)
                    and out[0]["symbol"] == "BTC/USD"
                    and out[0]["vendor_data"]["native_symbol"] == "XBT/USD"
                )

    run(main())


def test_capture_replay_serves_recorded_frames_verbatim() -> None:
    async def main() -> None:
        cap = RECORDED / "cryptofeed_sample_data" / "KRAKEN.ws.48.0"
        async with (
            ReplayServer("kraken", capture=cap, rate=1000) as srv,
            websockets.connect(srv.v1_url) as ws,
        ):
            await recv_json(ws)
            await ws.send(
                json.dumps(
                    {
                        "event": "subscribe",
                        "pair": ["XMR/USD", "SC/EUR"],
                        "subscription": {"name": "trade"},
                    }
                )
            )
            acks = [await recv_json(ws), await recv_json(ws)]
            assert {a["channelID"] for a in acks} == {993, 1921}  # the recorded channel ids
            frames = [await asyncio.wait_for(ws.recv(), 5) for _ in range(8)]
        recorded = [
            json.loads(line)["raw"]
            for line in (RECORDED / "cryptofeed_sample_data" / "derived_kraken_v1_trades.jsonl")
            .read_text()
            .splitlines()
        ]
        assert frames == recorded
        assert srv.expected_count() == 10

    run(main())


def test_binance_capture_jsonl_replay() -> None:
    async def main() -> None:
        cap = RECORDED / "cryptofeed_sample_data" / "derived_binance_aggtrades.jsonl"
        async with (
            ReplayServer("binance", capture=cap, rate=1000) as srv,
            websockets.connect(srv.url + "?streams=omgbusd@aggTrade") as ws,
        ):
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(11)]
        assert all(f["stream"] == "omgbusd@aggTrade" for f in frames)
        assert [f["data"]["a"] for f in frames] == list(range(425085, 425096))

    run(main())


def test_resume_after_drop_continues_from_last_served() -> None:
    async def main() -> None:
        async with ReplayServer(
            "binance", rate=2000, count=200, symbols=["BTC/USDT"], faults=[Fault("drop", at=50)]
        ) as srv:
            url = srv.url + "?streams=btcusdt@trade"
            ids = []
            async with websockets.connect(url) as ws:
                with pytest.raises(ConnectionClosed) as err:
                    while True:
                        ids.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["t"])
                assert err.value.rcvd is None  # dropped: no close frame
            assert len(ids) == 50
            async with websockets.connect(url) as ws:
                nxt = json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["t"]
            assert nxt == ids[-1] + 1

    run(main())


def test_server_thread_and_cli_args() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "kraken",
            "--rate",
            "50",
            "--count",
            "5",
            "--fault-drop-at",
            "3",
            "--fault-skip-at",
            "1",
            "--fault-skip-count",
            "2",
        ]
    )
    srv = replay_cli.server_from_args(args)
    assert [f.kind for f in srv.faults] == ["skip", "drop"] and srv.count == 5
    with ServerThread(srv) as running:
        assert running.port > 0 and running.url.endswith("/v2")


def test_invalid_every_marks_exact_positions_with_price_zero() -> None:
    """The dead-letter path's input: every Nth tape position is a parseable price-0 trade."""
    from k2_ingestors.replay.synthetic import INVALID_PRICE, Tape

    tape = Tape(("BTC/USDT", "ETH/USDT"), seed=3, invalid_every=5)
    prices = [tape.trade(i).price for i in range(20)]
    assert [i for i, p in enumerate(prices) if p == INVALID_PRICE] == [4, 9, 14, 19]
    plain = Tape(("BTC/USDT", "ETH/USDT"), seed=3)
    assert all(plain.trade(i).price != INVALID_PRICE for i in range(20))
    assert [tape.trade(i).trade_id for i in range(20)] == [plain.trade(i).trade_id for i in range(20)]
