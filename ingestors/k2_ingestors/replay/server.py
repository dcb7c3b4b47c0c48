"""Replay servers on 127.0.0.1 that speak Binance's and Kraken's WebSocket protocols.

What is served comes from a *tape*: the synthetic, seeded market of
`replay.synthetic.Tape` (infinite, or `count` trades) or the trade frames of a
recorded capture (`replay.capture`). Positions on the tape are paced at `rate` per
second per connection. A new connection starts where the furthest connection has
got to (the high-water mark), so the tape only advances while someone listens:
after a drop, a stall or a serverShutdown the client's next connection continues
exactly after the last trade served - no loss, and duplicates only where two
connections overlap. `expected_trades()` tells a test exactly what was served.

Protocols, as the exchanges speak them:
  Binance  /stream?streams=a@trade/b@trade (combined, wrapped), /ws/<stream> and /ws (raw),
           SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS by message, 5 incoming messages/s,
           1024 streams, protocol pings every 20 s, a connection lifetime, serverShutdown.
  Kraken   /v2: status on connect, subscribe acks per symbol (errors for unknown pairs),
           heartbeat each second without other traffic, ping -> pong, batched trade updates,
           snapshots; / (v1): systemStatus, subscriptionStatus with channelIDs, arrays, XBT.

Fault injection (API and CLI flags): drop the connection (TCP closed without a close
frame after everything sent is flushed), stall (send nothing), malformed frame,
serverShutdown (Kraken: status "maintenance" then close), skip trade ids. Faults are
either immediate (`drop()`, `stall()`, ...) or scheduled at a tape position.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from k2_ingestors.replay.capture import Capture, load_capture
from k2_ingestors.replay.synthetic import INVALID_PRICE, PERIOD, SynthTrade, Tape

log = logging.getLogger("k2.replay")

FAULT_KINDS = ("drop", "stall", "malformed", "shutdown", "skip")
DEFAULT_SYMBOLS = {"binance": ("BTC/USDT", "ETH/USDT"), "kraken": ("BTC/USD", "ETH/USD")}
DEFAULT_FIRST_ID = {"binance": 5_000_000_001, "kraken": 97_184_417}
V1_NATIVE = {"BTC": "XBT", "DOGE": "XDG"}


@dataclass
class Fault:
    kind: str
    at: int | None = None  # tape position that triggers it; None = immediately
    arg: float = 0.0  # stall: seconds; skip: how many positions
    fired: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (server -> client)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _rfc3339(ts_us: int) -> str:
    secs, us = divmod(ts_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{us:06d}Z"


def _json_number(text8: str) -> str:
    """'60241.84000000' -> '60241.84', '71749.00000000' -> '71749.0' (Kraken v2 JSON numbers)."""
    t = text8.rstrip("0")
    return t + "0" if t.endswith(".") else t


@dataclass
class _Conn:
    ws: ServerConnection
    id: int
    path: str
    opened: float
    wrapped: bool = True  # Binance combined stream (vs raw /ws)
    subs: dict[str, str] = field(default_factory=dict)  # tape key -> stream/channel name
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    snapshot: set[str] = field(default_factory=set)  # Kraken keys wanting a snapshot
    cursor: int = -1
    stalled_until: float = 0.0
    last_sent: float = 0.0
    sent_trades: int = 0
    sent_frames: int = 0
    closing: bool = False
    incoming: list[float] = field(default_factory=list)


class ReplayServer:
    """One exchange's protocol on 127.0.0.1, serving a synthetic or recorded tape."""

    def __init__(
        self,
        exchange: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        symbols: Iterable[str] | None = None,
        seed: int = 1,
        rate: float = 1000.0,
        count: int | None = None,
        batch: int | None = None,
        capture: str | Path | Capture | None = None,
        first_id: int | None = None,
        invalid_every: int | None = None,
        max_lifetime: float | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 60.0,
        heartbeat_interval: float = 1.0,
        shutdown_grace: float = 1.0,
        max_incoming_per_s: int = 5,
        max_streams: int = 1024,
        faults: Iterable[Fault] = (),
    ) -> None:
        self.exchange = exchange.lower()
        if self.exchange not in ("binance", "kraken"):
            raise ValueError(f"no replay protocol for {exchange!r}")
        self.host, self.port = host, port
        self.rate = float(rate)
        self.count = count
        self.max_lifetime = max_lifetime
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.heartbeat_interval = heartbeat_interval
        self.shutdown_grace = shutdown_grace
        self.max_incoming_per_s = max_incoming_per_s
        self.max_streams = max_streams
        self.capture: Capture | None = None
        self.tape: Tape | None = None
        if capture is not None:
            self.capture = (
                capture if isinstance(capture, Capture) else load_capture(capture, self.exchange)
            )
            if self.count is None or self.count > len(self.capture.frames):
                self.count = len(self.capture.frames)
        else:
            syms = tuple(symbols or DEFAULT_SYMBOLS[self.exchange])
            default_batch = 1 if self.exchange == "binance" else 3
            self.tape = Tape(
                syms,
                seed=seed,
                batch=batch or default_batch,
                first_id=first_id or DEFAULT_FIRST_ID[self.exchange],
                invalid_every=invalid_every,
            )
        self.faults: list[Fault] = sorted(faults, key=lambda f: f.at if f.at is not None else -1)
        self.hwm = 0  # first tape position nobody has been sent yet
        self.skipped: list[tuple[int, int]] = []  # [start, end) positions never served
        self.connections: dict[int, _Conn] = {}
        self.connections_total = 0
        self.frames_sent = 0
        self.trades_sent = 0
        self.malformed_sent = 0
        self.shutdowns_sent = 0
        self.drops = 0
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._t0_us = (
            time.time_ns() // 1_000_000
        ) * 1000  # tape clock origin, reset at the first subscription
        self._clock_started = False
        self._natives: dict[str, str] = {}  # subscription name -> tape key (synthetic)
        if self.tape is not None:
            for s in self.tape.symbols:
                base, quote = s.split("/")
                self._natives[f"{base}{quote}".lower()] = s
                self._natives[s] = s
                self._natives[f"{V1_NATIVE.get(base, base)}/{V1_NATIVE.get(quote, quote)}"] = s

    # ---- lifecycle ----------------------------------------------------------------
    async def start(self) -> ReplayServer:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_queue=64,
            write_limit=2**20,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        log.info("replay server %s listening on %s", self.exchange, self.url)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        for t in list(self._tasks):
            t.cancel()

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint an ingestor is pointed at (Binance /stream, Kraken /v2)."""
        if self.exchange == "binance":
            return f"{self.base_url}/stream"
        return f"{self.base_url}/v2"

    @property
    def v1_url(self) -> str:
        return f"{self.base_url}/"

    # ---- what was served ------------------------------------------------------------
    def _is_skipped(self, pos: int) -> bool:
        return any(a <= pos < b for a, b in self.skipped)

    def served_positions(self) -> list[int]:
        return [p for p in range(self.hwm) if not self._is_skipped(p)]

    def expected_trades(self, keys: Iterable[str] | None = None) -> list[SynthTrade]:
        """Every distinct synthetic trade served so far (optionally only some symbols)."""
        assert self.tape is not None, "expected_trades() is for synthetic tapes"
        want = set(keys) if keys is not None else None
        out = []
        for p in self.served_positions():
            t = self.tape.trade(p)
            if want is None or t.symbol in want:
                out.append(t)
        return out

    def expected_count(self) -> int:
        if self.capture is not None:
            return sum(self.capture.frames[p].trades for p in self.served_positions())
        return len(self.served_positions())

    def trade_timestamp_us(self, pos: int) -> int:
        """Tape time of a position: deterministic, so duplicates are identical."""
        return self._t0_us + int(pos * 1_000_000 / self.rate) if self.rate > 0 else self._t0_us

    # ---- fault injection ----------------------------------------------------------
    def schedule(self, fault: Fault) -> None:
        self._call(self._schedule, fault)

    def _schedule(self, fault: Fault) -> None:
        if fault.at is None:
            for conn in list(self.connections.values()):
                out: list[bytes] = []
                self._fire(conn, fault, out)
                if out and conn.ws.state is State.OPEN:
                    conn.ws.transport.write(b"".join(out))
            fault.fired = True
        else:
            self.faults.append(fault)
            self.faults.sort(key=lambda f: f.at if f.at is not None else -1)

    def drop(self) -> None:
        """Drop every open connection (TCP closed without a close frame, after a flush)."""
        self.schedule(Fault("drop"))

    def stall(self, seconds: float) -> None:
        """Open connections send nothing (no trades, no heartbeats) for `seconds`."""
        self.schedule(Fault("stall", arg=seconds))

    def send_malformed(self) -> None:
        self.schedule(Fault("malformed"))

    def server_shutdown(self) -> None:
        self.schedule(Fault("shutdown"))

    def skip_ids(self, n: int) -> None:
        self.schedule(Fault("skip", arg=n))

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            fn(*args)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _fire(self, conn: _Conn, fault: Fault, out: list[bytes]) -> None:
        kind = fault.kind
        log.info("fault %s on connection %d at position %d", kind, conn.id, conn.cursor)
        if kind == "stall":
            conn.stalled_until = time.monotonic() + fault.arg
        elif kind == "malformed":
            out.append(self._malformed_frame())
            self.malformed_sent += 1
        elif kind == "shutdown":
            out.append(self._shutdown_frame())
            self.shutdowns_sent += 1
            self._spawn(self._close_later(conn, self.shutdown_grace, 1001, "server shutdown"))
        elif kind == "skip":
            start = max(conn.cursor, self.hwm)
            self.skipped.append((start, start + int(fault.arg)))
        elif kind == "drop":
            conn.closing = True
            self.drops += 1
            self._spawn(self._drop(conn, out[:]))
            out.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, conn: _Conn, pending: list[bytes]) -> None:
        transport = conn.ws.transport
        if pending and conn.ws.state is State.OPEN:
            transport.write(b"".join(pending))
        for _ in range(200):  # let everything queued reach the kernel
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_WR)  # FIN after the data: the client sees an abnormal close
        await asyncio.sleep(0.2)
        transport.abort()

    async def _close_later(self, conn: _Conn, delay: float, code: int, reason: str) -> None:
        await asyncio.sleep(delay)
        conn.closing = True
        with contextlib.suppress(Exception):
            await conn.ws.close(code, reason)

    # ---- handshake -----------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if self.exchange == "binance":
            if path == "/stream":
                streams = parse_qs(parts.query).get("streams", [""])[0]
                names = [s for s in streams.split("/") if s]
                if not names:
                    return connection.respond(
                        HTTPStatus.BAD_REQUEST, "Invalid request: no streams\n"
                    )
                if len(names) > self.max_streams:
                    return connection.respond(
                        HTTPStatus.BAD_REQUEST,
                        f"Invalid request: more than {self.max_streams} streams\n",
                    )
                return None
            if path == "/ws" or path.startswith("/ws/"):
                return None
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if path in ("/v2", "/", ""):
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")

    # ---- connections ---------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = _Conn(ws, next(self._ids), ws.request.path, time.monotonic())
        self.connections[conn.id] = conn
        self.connections_total += 1
        pump = asyncio.get_running_loop().create_task(self._pump(conn))
        try:
            await self._on_open(conn)
            async for message in ws:
                now = time.monotonic()
                conn.incoming = [t for t in conn.incoming if now - t < 1.0]
                conn.incoming.append(now)
                if self.exchange == "binance" and len(conn.incoming) > self.max_incoming_per_s:
                    raise _Close(1008, "Too many messages")
                for reply in self._on_message(
                    conn, message if isinstance(message, str) else message.decode()
                ):
                    await ws.send(reply)
        except _Close as exc:
            conn.closing = True
            await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        finally:
            conn.closing = True
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            self.connections.pop(conn.id, None)

    async def _on_open(self, conn: _Conn) -> None:
        parts = urlsplit(conn.path)
        if self.exchange == "binance":
            if parts.path == "/stream":
                names = parse_qs(parts.query).get("streams", [""])[0].split("/")
                self._binance_subscribe(conn, [n for n in names if n])
            else:
                conn.wrapped = False
                if parts.path.startswith("/ws/"):
                    self._binance_subscribe(conn, [n for n in parts.path[4:].split("/") if n])
            return
        if parts.path == "/v2":
            await conn.ws.send(
                orjson.dumps(
                    {
                        "channel": "status",
                        "data": [
                            {
                                "api_version": "v2",
                                "connection_id": 10**18 + conn.id,
                                "system": "online",
                                "version": "2.0.10",
                            }
                        ],
                        "type": "update",
                    }
                ).decode()
            )
        else:
            await conn.ws.send(
                orjson.dumps(
                    {
                        "connectionID": 10**18 + conn.id,
                        "event": "systemStatus",
                        "status": "online",
                        "version": "1.9.5",
                    }
                ).decode()
            )

    def _tape_key(self, name: str) -> str | None:
        """Subscription name -> tape key (None when this server has no such market)."""
        if self.capture is not None:
            keys = set(self.capture.keys())
            return name if name in keys else (name.lower() if name.lower() in keys else None)
        if self.exchange == "binance":
            sym, _, kind = name.lower().partition("@")
            if kind not in ("trade", "aggtrade"):
                return None
            return self._natives.get(sym)
        return self._natives.get(name)

    def _binance_subscribe(self, conn: _Conn, names: list[str]) -> None:
        for n in names:
            key = self._tape_key(n)
            if key is not None:
                conn.subs[key] = n
        conn.subscribed.set()

    def _on_message(self, conn: _Conn, text: str) -> list[str]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            if self.exchange == "binance":
                return [
                    orjson.dumps(
                        {
                            "error": {
                                "code": 3,
                                "msg": "Invalid JSON: expected value at line 1 column 1",
                            }
                        }
                    ).decode()
                ]
            return [orjson.dumps({"error": "Malformed request", "success": False}).decode()]
        if self.exchange == "binance":
            return self._binance_message(conn, msg)
        if urlsplit(conn.path).path == "/v2":
            return self._kraken_v2_message(conn, msg)
        return self._kraken_v1_message(conn, msg)

    def _binance_message(self, conn: _Conn, msg: Any) -> list[str]:
        if not isinstance(msg, dict) or "method" not in msg:
            return [
                orjson.dumps(
                    {
                        "error": {
                            "code": 2,
                            "msg": "Invalid request: request ID must be an unsigned integer",
                        },
                        "id": None,
                    }
                ).decode()
            ]
        method, params, rid = msg.get("method"), msg.get("params") or [], msg.get("id")
        if method == "SUBSCRIBE":
            if len(conn.subs) + len(params) > self.max_streams:
                return [
                    orjson.dumps(
                        {
                            "error": {
                                "code": 2,
                                "msg": f"Invalid request: more than {self.max_streams} streams",
                            },
                            "id": rid,
                        }
                    ).decode()
                ]
            self._binance_subscribe(conn, [str(p) for p in params])
            return [orjson.dumps({"result": None, "id": rid}).decode()]
        if method == "UNSUBSCRIBE":
            for p in params:
                key = self._tape_key(str(p))
                if key is not None:
                    conn.subs.pop(key, None)
            return [orjson.dumps({"result": None, "id": rid}).decode()]
        if method == "LIST_SUBSCRIPTIONS":
            return [orjson.dumps({"result": sorted(conn.subs.values()), "id": rid}).decode()]
        return [
            orjson.dumps(
                {
                    "error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                    "id": rid,
                }
            ).decode()
        ]

    def _kraken_v2_message(self, conn: _Conn, msg: Any) -> list[str]:
        now = _rfc3339(time.time_ns() // 1000)
        if not isinstance(msg, dict) or "method" not in msg:
            return [
                orjson.dumps(
                    {
                        "error": "Malformed request",
                        "success": False,
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        method, rid = msg["method"], msg.get("req_id")
        base: dict[str, Any] = {"method": method}
        if rid is not None:
            base["req_id"] = rid
        if method == "ping":
            return [
                orjson.dumps(
                    {
                        "method": "pong",
                        **({"req_id": rid} if rid is not None else {}),
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        if method not in ("subscribe", "unsubscribe"):
            return [
                orjson.dumps(
                    {
                        **base,
                        "error": f"Method not found {method}",
                        "success": False,
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        params = msg.get("params") or {}
        channel = params.get("channel")
        if channel == "heartbeat":
            return [
                orjson.dumps(
                    {
                        **base,
                        "result": {"channel": "heartbeat"},
                        "success": True,
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        if channel != "trade":
            return [
                orjson.dumps(
                    {
                        **base,
                        "error": f"Channel not supported {channel}",
                        "success": False,
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols:
            return [
                orjson.dumps(
                    {
                        **base,
                        "error": "Missing or invalid symbol",
                        "success": False,
                        "time_in": now,
                        "time_out": now,
                    }
                ).decode()
            ]
        snapshot = bool(params.get("snapshot", True))
        replies = []
        for s in symbols:
            key = self._tape_key(str(s))
            if key is None:
                replies.append(
                    {
                        **base,
                        "error": f"Currency pair not supported {s}",
                        "success": False,
                        "symbol": s,
                        "time_in": now,
                        "time_out": now,
                    }
                )
                continue
            if method == "subscribe":
                conn.subs[key] = str(s)
                if snapshot:
                    conn.snapshot.add(key)
                result = {"channel": "trade", "snapshot": snapshot, "symbol": s}
            else:
                conn.subs.pop(key, None)
                result = {"channel": "trade", "symbol": s}
            replies.append(
                {**base, "result": result, "success": True, "time_in": now, "time_out": now}
            )
        if method == "subscribe" and conn.subs:
            conn.subscribed.set()
        return [orjson.dumps(r).decode() for r in replies]

    def _kraken_v1_message(self, conn: _Conn, msg: Any) -> list[str]:
        if not isinstance(msg, dict) or "event" not in msg:
            return [
                orjson.dumps(
                    {"errorMessage": "Malformed request", "event": "error", "status": "error"}
                ).decode()
            ]
        event, reqid = msg["event"], msg.get("reqid")
        extra = {"reqid": reqid} if reqid is not None else {}
        if event == "ping":
            return [orjson.dumps({"event": "pong", **extra}).decode()]
        if event not in ("subscribe", "unsubscribe"):
            return [
                orjson.dumps(
                    {
                        "errorMessage": f"Unsupported event {event}",
                        "event": "error",
                        "status": "error",
                        **extra,
                    }
                ).decode()
            ]
        sub = msg.get("subscription") or {}
        pairs = msg.get("pair") or []
        replies = []
        for p in pairs:
            key = self._tape_key(str(p))
            if sub.get("name") != "trade" or key is None:
                replies.append(
                    {
                        "errorMessage": "Currency pair not supported",
                        "event": "subscriptionStatus",
                        "pair": p,
                        "status": "error",
                        "subscription": sub,
                        **extra,
                    }
                )
                continue
            cid = self._v1_channel_id(str(p))
            if event == "subscribe":
                conn.subs[key] = str(p)
                replies.append(
                    {
                        "channelID": cid,
                        "channelName": "trade",
                        "event": "subscriptionStatus",
                        "pair": p,
                        "status": "subscribed",
                        "subscription": {"name": "trade"},
                        **extra,
                    }
                )
            else:
                conn.subs.pop(key, None)
                replies.append(
                    {
                        "channelID": cid,
                        "channelName": "trade",
                        "event": "subscriptionStatus",
                        "pair": p,
                        "status": "unsubscribed",
                        "subscription": {"name": "trade"},
                        **extra,
                    }
                )
        if conn.subs:
            conn.subscribed.set()
        return [orjson.dumps(r).decode() for r in replies]

    def _v1_channel_id(self, pair: str) -> int:
        if self.capture is not None and pair in self.capture.channel_ids:
            return self.capture.channel_ids[pair]
        return 100 + sum(pair.encode()) % 9000

    # ---- sending -------------------------------------------------------------------
    async def _pump(self, conn: _Conn) -> None:
        await conn.subscribed.wait()
        if not self._clock_started:  # tape time starts with the first listener (ms aligned)
            self._clock_started = True
            self._t0_us = (time.time_ns() // 1_000_000) * 1000
        ws = conn.ws
        transport = ws.transport
        conn.cursor = self.hwm
        out: list[bytes] = []
        if conn.snapshot:
            out.extend(self._snapshots(conn))
            conn.snapshot.clear()
        tokens = 0.0
        burst = max(1.0, self.rate * 0.05)
        last = time.monotonic()
        is_v2 = urlsplit(conn.path).path == "/v2"
        while not conn.closing and ws.state is State.OPEN:
            now = time.monotonic()
            if self.max_lifetime is not None and now - conn.opened >= self.max_lifetime:
                conn.closing = True
                await ws.close(1001, "connection lifetime exceeded")
                return
            if conn.stalled_until > now:
                last = now
                await asyncio.sleep(min(0.05, conn.stalled_until - now))
                continue
            tokens = min(burst, tokens + (now - last) * self.rate)
            last = now
            n = int(tokens)
            if n > 0 and (self.count is None or conn.cursor < self.count):
                tokens -= self._fill(conn, n, out, is_v2)
                if conn.cursor > self.hwm:
                    self.hwm = conn.cursor
            if conn.closing:  # a drop fault took over the connection
                return
            if out:
                if ws.state is not State.OPEN:
                    return
                transport.write(b"".join(out))
                out.clear()
                conn.last_sent = now
                if conn.cursor > self.hwm:
                    self.hwm = conn.cursor
                while transport.get_write_buffer_size() > 4 * 2**20 and ws.state is State.OPEN:
                    await asyncio.sleep(0.002)  # the client is slow: TCP backpressure
            elif (
                self.exchange == "kraken"
                and now - max(conn.last_sent, conn.opened) >= self.heartbeat_interval
            ):
                hb = b'{"channel":"heartbeat"}' if is_v2 else b'{"event":"heartbeat"}'
                transport.write(_ws_frame(hb))
                conn.last_sent = now
            if conn.cursor > self.hwm:
                self.hwm = conn.cursor
            await asyncio.sleep(0.001 if self.rate >= 1000 else 0.005)

    def _fill(self, conn: _Conn, n: int, out: list[bytes], is_v2: bool) -> int:
        """Render up to `n` tape positions from the connection's cursor; returns positions used."""
        used = 0
        limit = self.count
        pending: list[int] = []
        while used < n and (limit is None or conn.cursor < limit):
            pos = conn.cursor
            while self.faults and self.faults[0].at is not None and self.faults[0].at <= pos:
                fault = self.faults.pop(0)
                if pending:
                    self._render(conn, pending, out, is_v2)
                    pending = []
                fault.fired = True
                self._fire(conn, fault, out)
                if conn.closing:
                    return used
                if fault.kind == "skip" or conn.stalled_until > time.monotonic():
                    break
            if conn.stalled_until > time.monotonic():
                break
            for a, b in self.skipped:
                if a <= pos < b:
                    conn.cursor = pos = b
            if limit is not None and pos >= limit:
                break
            if self._key_at(pos) in conn.subs:
                pending.append(pos)
            conn.cursor = pos + 1
            used += 1
        if pending:
            self._render(conn, pending, out, is_v2)
        return used

    def _key_at(self, pos: int) -> str:
        if self.capture is not None:
            return self.capture.frames[pos].key
        assert self.tape is not None
        return self.tape.symbol_of(pos)

    def _render(self, conn: _Conn, positions: list[int], out: list[bytes], is_v2: bool) -> None:
        if self.capture is not None:
            for p in positions:
                f = self.capture.frames[p]
                out.append(_ws_frame(f.raw.encode()))
                conn.sent_trades += f.trades
                self.trades_sent += f.trades
            conn.sent_frames += len(positions)
            self.frames_sent += len(positions)
            return
        assert self.tape is not None
        tape = self.tape
        if self.exchange == "binance":
            self._render_binance(conn, positions, out)
            conn.sent_frames += len(positions)
            self.frames_sent += len(positions)
        else:
            group: list[SynthTrade] = []
            group_pos: list[int] = []
            for p in positions:
                t = tape.trade(p)
                if group and (t.symbol != group[0].symbol or len(group) >= tape.batch):
                    out.append(
                        _ws_frame(
                            self._kraken_frame(conn, group, group_pos, is_v2, "update").encode()
                        )
                    )
                    group, group_pos = [], []
                group.append(t)
                group_pos.append(p)
            if group:
                out.append(
                    _ws_frame(self._kraken_frame(conn, group, group_pos, is_v2, "update").encode())
                )
        conn.sent_trades += len(positions)
        self.trades_sent += len(positions)

    def _render_binance(self, conn: _Conn, positions: list[int], out: list[bytes]) -> None:
        """The hot path of the Binance replay: one frame per trade, no intermediate objects."""
        tape = self.tape
        assert tape is not None
        symbols, nsym, batch, first = tape.symbols, len(tape.symbols), tape.batch, tape.first_id
        tables = {s: tape.table(s) for s in symbols}
        t0, step = self._t0_us, (1_000_000 / self.rate if self.rate > 0 else 0.0)
        heads: dict[str, tuple[str, str]] = {}
        for sym, stream in conn.subs.items():
            native = stream.partition("@")[0].upper()
            agg = stream.lower().endswith("@aggtrade")
            kind = "aggTrade" if agg else "trade"
            pre = f'{{"stream":"{stream}","data":' if conn.wrapped else ""
            heads[sym] = (
                f'{pre}{{"e":"{kind}","E":',
                f',"s":"{native}","{"a" if agg else "t"}":',
                "}" if conn.wrapped else "",
                agg,
            )  # type: ignore[assignment]
        append = out.append
        for p in positions:
            block = p // batch
            sym = symbols[block % nsym]
            seq = (block // nsym) * batch + p % batch
            price, qty, maker = tables[sym][seq % PERIOD]
            if tape.is_invalid(p):
                price = INVALID_PRICE
            ms = (t0 + int(p * step)) // 1000
            head, mid, tail, agg = heads[sym]  # type: ignore[misc]
            tid = first + seq
            extra = f',"f":{tid},"l":{tid}' if agg else ""
            body = f'{head}{ms}{mid}{tid},"p":"{price}","q":"{qty}"{extra},"T":{ms},"m":{"true" if maker else "false"},"M":true}}{tail}'.encode()
            n = len(body)
            append(
                (bytes((0x81, n)) if n < 126 else bytes((0x81, 126)) + n.to_bytes(2, "big")) + body
            )

    def _binance_trade(self, conn: _Conn, t: SynthTrade, ts_ms: int) -> str:
        stream = conn.subs[t.symbol]
        native = stream.partition("@")[0].upper()
        m = "true" if t.buyer_is_maker else "false"
        if stream.lower().endswith("@aggtrade"):
            body = (
                f'{{"e":"aggTrade","E":{ts_ms},"s":"{native}","a":{t.trade_id},"p":"{t.price}","q":"{t.qty}",'
                f'"f":{t.trade_id},"l":{t.trade_id},"T":{ts_ms},"m":{m},"M":true}}'
            )
        else:
            body = f'{{"e":"trade","E":{ts_ms},"s":"{native}","t":{t.trade_id},"p":"{t.price}","q":"{t.qty}","T":{ts_ms},"m":{m},"M":true}}'
        if conn.wrapped:
            return f'{{"stream":"{stream}","data":{body}}}'
        return body

    def _kraken_frame(
        self, conn: _Conn, trades: list[SynthTrade], positions: list[int], is_v2: bool, kind: str
    ) -> str:
        name = conn.subs.get(trades[0].symbol, trades[0].symbol)
        if is_v2:
            items = []
            for t, p in zip(trades, positions, strict=True):
                side = "sell" if t.buyer_is_maker else "buy"
                ord_type = "market" if t.trade_id % 3 == 0 else "limit"
                items.append(
                    f'{{"symbol":"{name}","side":"{side}","price":{_json_number(t.price)},"qty":{_json_number(t.qty)},'
                    f'"ord_type":"{ord_type}","trade_id":{t.trade_id},"timestamp":"{_rfc3339(self.trade_timestamp_us(p))}"}}'
                )
            return f'{{"channel":"trade","type":"{kind}","data":[{",".join(items)}]}}'
        rows = []
        for t, p in zip(trades, positions, strict=True):
            ts = self.trade_timestamp_us(p)
            side = "s" if t.buyer_is_maker else "b"
            ord_type = "m" if t.trade_id % 3 == 0 else "l"
            rows.append(
                f'["{t.price[:-3]}","{t.qty}","{ts // 1_000_000}.{ts % 1_000_000:06d}","{side}","{ord_type}",""]'
            )
        return f'[{self._v1_channel_id(name)},[{",".join(rows)}],"trade","{name}"]'

    def _snapshots(self, conn: _Conn) -> list[bytes]:
        """Kraken's snapshot: up to 50 most recent trades per symbol before the cursor."""
        if self.tape is None:
            return []
        out = []
        is_v2 = urlsplit(conn.path).path == "/v2"
        for key in sorted(conn.snapshot):
            if key not in self.tape.symbols:
                continue
            positions = [
                p
                for p in range(max(0, conn.cursor - 50 * len(self.tape.symbols)), conn.cursor)
                if self.tape.symbol_of(p) == key and not self._is_skipped(p)
            ][-50:]
            trades = [self.tape.trade(p) for p in positions]
            out.append(
                _ws_frame(self._kraken_frame(conn, trades, positions, is_v2, "snapshot").encode())
            )
        return out

    def _malformed_frame(self) -> bytes:
        if self.exchange == "binance":
            return _ws_frame(b'{"stream":"btcusdt@trade","data":{"e":"trade","E":17000000000')
        return _ws_frame(b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","price":')

    def _shutdown_frame(self) -> bytes:
        ms = time.time_ns() // 1_000_000
        if self.exchange == "binance":
            return _ws_frame(f'{{"e":"serverShutdown","E":{ms}}}'.encode())
        return _ws_frame(
            orjson.dumps(
                {
                    "channel": "status",
                    "data": [
                        {
                            "api_version": "v2",
                            "connection_id": 0,
                            "system": "maintenance",
                            "version": "2.0.10",
                        }
                    ],
                    "type": "update",
                }
            )
        )


class ServerThread:
    """Run a ReplayServer on its own event loop in a background thread (sync callers)."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"replay-{server.exchange}", daemon=True
        )

    def start(self) -> ReplayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self.server

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
