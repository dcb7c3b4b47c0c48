"""The resilient WebSocket client every exchange adapter runs on.

Patterns (each unit-tested against the replay server):

- reconnect with exponential backoff and jitter (`Backoff`), and a circuit breaker
  (`CircuitBreaker`) that stops hammering after repeated failures;
- failover across a list of endpoints (the next one after each failure);
- proactive rotation before the server's connection lifetime ends (Binance: 24 h):
  a standby connection is opened and subscribed while the old one keeps streaming;
  the standby's trades are held until they overlap what the old one delivered, then
  the old one is closed and the held trades are released; the overlap's duplicates
  are removed by trade id (`Sequencer`). A `serverShutdown` notice triggers the same;
- liveness: websockets answers the server's protocol pings (and pings the server);
  the adapter's application-level ping (Kraken `{"method":"ping"}`) is sent on a
  timer; a connection silent for longer than `stale_after` is dropped and replaced;
- sequential trade ids per symbol: duplicates dropped, gaps counted and logged with
  the missing range.

Hot path: one parse per frame (the adapter), a dict lookup per trade (the sequencer),
plain-int counters (exported to Prometheus at scrape time), and one awaited hand-off
per frame to the bounded buffer, whose waiting is the backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from k2.contracts.trade import TradeV3
from k2_ingestors.buffer import BufferClosed
from k2_ingestors.exchanges.base import Event, ExchangeAdapter, ParseError

log = logging.getLogger("k2.ingest.ws")

EmitFn = Callable[[list[TradeV3]], Awaitable[None]]
DeadLetterFn = Callable[[bytes, str, str], Awaitable[None]]  # raw frame, error, url


@dataclass
class ClientPolicy:
    """Timing of the resilience patterns; None means "the adapter's default"."""

    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.5  # the delay is scaled by a random factor in [1 - jitter, 1]
    breaker_threshold: int = 10  # consecutive failed attempts that open the circuit
    breaker_cooldown: float = 60.0  # seconds the circuit stays open before one trial
    healthy_after: float = 10.0  # a connection that lived this long resets the backoff
    stale_after: float | None = None
    rotate_after: float | None = None  # default: the adapter's lifetime minus `rotate_margin`
    rotate_margin: float = 900.0
    overlap_timeout: float = 10.0  # longest a standby waits for overlap before cutting over
    max_held: int = 200_000  # trades a standby may hold before cutting over anyway
    app_ping_interval: float | None = None
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0  # websockets protocol pings from our side
    ping_timeout: float | None = 20.0
    max_queue: int = 4096  # frames websockets buffers before it stops reading the socket
    close_timeout: float = 2.0


class Backoff:
    """Exponential backoff with jitter: initial * multiplier**n, capped, scaled by [1-jitter, 1]."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.maximum, self.multiplier, self.jitter = (
            initial,
            maximum,
            multiplier,
            jitter,
        )
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.multiplier**self.attempts)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (cooldown) -> half-open -> one trial."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return self.CLOSED
        if self._clock() - self.opened_at >= self.cooldown:
            return self.HALF_OPEN
        return self.OPEN

    def retry_in(self) -> float:
        """Seconds until an attempt is allowed (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self.opened_at))

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if (
            self.opened_at is not None or self.failures >= self.threshold
        ):  # the half-open trial failed: open again
            self.opened_at = self._clock()
            self.times_opened += 1


@dataclass
class ClientStats:
    """Plain counters (cheap on the hot path); `health` exports them to Prometheus."""

    frames: int = 0
    trades: int = 0  # trades emitted (after dedup)
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0  # trades missing inside the gaps
    parse_errors: int = 0
    events: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    stale_reconnects: int = 0
    rotations: int = 0
    server_shutdowns: int = 0
    app_pings: int = 0
    last_message: float = 0.0  # time.monotonic() of the last frame
    connected: bool = False
    subscribed: bool = False
    url: str = ""


class Sequencer:
    """Per-symbol ordering guard: drops duplicates, reports gaps.

    With sequential integer ids a watermark per symbol suffices; otherwise (Kraken v1,
    ids derived from content) the last `window` message ids are remembered.
    """

    def __init__(self, adapter: ExchangeAdapter, stats: ClientStats, window: int = 100_000) -> None:
        self.adapter = adapter
        self.stats = stats
        self.watermark: dict[str, int] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._window = window

    def admit(self, trades: list[TradeV3]) -> list[TradeV3]:
        wm = self.watermark
        sequential = self.adapter.sequential_ids
        out: list[TradeV3] = []
        for t in trades:
            seq: int | None
            if sequential:
                tid = t["trade_id"]
                seq = int(tid) if tid.isdigit() else None
            else:
                seq = None
            if seq is None:
                mid = t["message_id"]
                if mid in self._recent:
                    self.stats.duplicates += 1
                    continue
                self._recent[mid] = None
                if len(self._recent) > self._window:
                    self._recent.popitem(last=False)
                out.append(t)
                continue
            sym = t["symbol"]
            last = wm.get(sym)
            if last is not None:
                if seq <= last:
                    self.stats.duplicates += 1
                    continue
                if seq != last + 1:
                    missing = seq - last - 1
                    self.stats.gaps += 1
                    self.stats.missing += missing
                    log.warning(
                        "%s %s: gap of %d trade(s), ids %d..%d missing",
                        self.adapter.name,
                        sym,
                        missing,
                        last + 1,
                        seq - 1,
                    )
            wm[sym] = seq
            out.append(t)
        return out

    def overlaps(self, held: Sequence[TradeV3]) -> bool:
        """True when a standby's held trades reach back to (or before) what was emitted."""
        for t in held:
            seq = self.adapter.sequence_of(t)
            if seq is None:
                if t["message_id"] in self._recent:
                    return True
                continue
            last = self.watermark.get(t["symbol"])
            if last is not None and seq <= last + 1:
                return True
        return False


class _Conn:
    def __init__(self, ws: ClientConnection, url: str, standby: bool) -> None:
        self.ws = ws
        self.url = url
        self.opened = time.monotonic()
        self.last_message = self.opened
        self.last_app_ping = self.opened
        self.standby = standby
        self.retired = False
        self.held: list[TradeV3] = []
        self.reason = ""
        self.task: asyncio.Task[str] | None = None


class ResilientClient:
    """Keeps one exchange subscription streaming, whatever the network does."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        urls: Sequence[str],
        emit: EmitFn,
        *,
        policy: ClientPolicy | None = None,
        dead_letter: DeadLetterFn | None = None,
        stats: ClientStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one endpoint URL is required")
        self.adapter = adapter
        self.urls = list(urls)
        self.emit = emit
        self.policy = policy or ClientPolicy()
        self.dead_letter = dead_letter
        self.stats = stats or ClientStats()
        p = self.policy
        self.backoff = Backoff(
            p.backoff_initial, p.backoff_max, p.backoff_multiplier, p.jitter, rng
        )
        self.breaker = CircuitBreaker(p.breaker_threshold, p.breaker_cooldown)
        self.sequencer = Sequencer(adapter, self.stats)
        self.stale_after = p.stale_after if p.stale_after is not None else adapter.stale_after
        self.app_ping_interval = (
            p.app_ping_interval if p.app_ping_interval is not None else adapter.app_ping_interval
        )
        lifetime = adapter.max_connection_lifetime
        self.rotate_after = (
            p.rotate_after
            if p.rotate_after is not None
            else (max(60.0, lifetime - p.rotate_margin) if lifetime else None)
        )
        self._endpoint = 0
        self._primary: _Conn | None = None
        self._standby: _Conn | None = None
        self._rotating = False
        self._rotate_now = asyncio.Event()
        self._stop = asyncio.Event()
        self.attempts_log: list[str] = []  # URLs tried, in order (tests read it)

    # ---- public -----------------------------------------------------------------
    @property
    def current_url(self) -> str:
        return self.urls[self._endpoint % len(self.urls)]

    def stop(self) -> None:
        self._stop.set()

    def request_rotation(self) -> None:
        """Open a standby connection and cut over to it (what serverShutdown triggers)."""
        self._rotate_now.set()

    async def run(self) -> None:
        """Stream until `stop()`; never raises for network trouble."""
        loop = asyncio.get_running_loop()
        supervisor = loop.create_task(self._supervise())
        stopped = loop.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                wait = self.breaker.retry_in()
                if wait > 0:
                    log.warning(
                        "%s: circuit open after %d failures; next attempt in %.1fs",
                        self.adapter.name,
                        self.breaker.failures,
                        wait,
                    )
                    await self._sleep(wait)
                    continue
                conn = await self._open(self.current_url, standby=False)
                if conn is None:
                    self.breaker.record_failure()
                    self._failover()
                    await self._sleep(self.backoff.next())
                    continue
                # the breaker closes when the connection proves healthy (see below), not on connect
                self._primary = conn
                conn.task = asyncio.get_running_loop().create_task(self._reader(conn))
                while True:  # follow the primary through rotations
                    current = self._primary
                    assert current is not None and current.task is not None
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait(
                            {current.task, stopped}, return_when=asyncio.FIRST_COMPLETED
                        )
                    if self._stop.is_set():
                        break
                    if self._primary is current and current.task.done():
                        if self._rotating:  # a standby is being cut over: it becomes primary
                            await asyncio.sleep(0.01)
                            continue
                        break
                self.stats.connected = False
                self.stats.subscribed = False
                if self._stop.is_set():
                    break
                lived = time.monotonic() - (self._primary.opened if self._primary else 0)
                self.stats.disconnects += 1
                reason = self._primary.reason if self._primary else "?"
                if lived >= self.policy.healthy_after:
                    self.backoff.reset()
                    self.breaker.record_success()
                else:  # accepted then closed at once (flapping) counts as a failure
                    self.breaker.record_failure()
                if reason != "stale":
                    self._failover()
                delay = self.backoff.next()
                log.warning(
                    "%s: connection to %s ended (%s) after %.1fs; reconnecting in %.2fs",
                    self.adapter.name,
                    self.stats.url,
                    reason,
                    lived,
                    delay,
                )
                await self._sleep(delay)
        finally:
            supervisor.cancel()
            stopped.cancel()
            for c in (self._standby, self._primary):
                if c is not None:
                    c.retired = True
                    await self._close(c)
                    if c.task is not None:
                        c.task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await c.task
            self.stats.connected = False
            self.stats.subscribed = False

    # ---- connections --------------------------------------------------------------
    def _failover(self) -> None:
        if len(self.urls) > 1:
            self._endpoint = (self._endpoint + 1) % len(self.urls)
            log.info("%s: failing over to %s", self.adapter.name, self.current_url)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _open(self, base_url: str, standby: bool) -> _Conn | None:
        url = self.adapter.stream_url(base_url)
        self.attempts_log.append(base_url)
        p = self.policy
        try:
            ws = await connect(
                url,
                compression=None,
                open_timeout=p.open_timeout,
                ping_interval=p.ping_interval,
                ping_timeout=p.ping_timeout,
                close_timeout=p.close_timeout,
                max_queue=p.max_queue,
                max_size=2**23,
                proxy=None,
                user_agent_header="k2-ingestor",
            )
            for msg in self.adapter.subscribe_messages(url):
                await ws.send(msg)
        except (TimeoutError, OSError, ConnectionClosed, Exception) as exc:  # noqa: BLE001 - any failure is a failed attempt
            self.stats.connect_failures += 1
            log.warning("%s: connecting to %s failed: %s", self.adapter.name, base_url, exc)
            return None
        self.stats.connects += 1
        if not standby:
            self.stats.connected = True
            self.stats.url = base_url
            self.stats.last_message = time.monotonic()
        conn = _Conn(ws, url, standby)
        if (
            type(self.adapter).subscribe_messages is ExchangeAdapter.subscribe_messages
            and not standby
        ):
            self.stats.subscribed = True  # subscribed by URL (Binance)
        log.info(
            "%s: connected to %s%s", self.adapter.name, base_url, " (standby)" if standby else ""
        )
        return conn

    async def _close(self, conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), self.policy.close_timeout + 1)

    # ---- reading -------------------------------------------------------------------
    async def _reader(self, conn: _Conn) -> str:
        ws = conn.ws
        adapter = self.adapter
        parse = adapter.parse
        stats = self.stats
        admit = self.sequencer.admit
        emit = self.emit
        clock = time.monotonic
        now_ns = time.time_ns
        try:
            while True:
                raw = await ws.recv(decode=False)
                t = clock()
                conn.last_message = t
                stats.frames += 1
                try:
                    parsed = parse(raw, now_ns() // 1000)
                except ParseError as exc:
                    stats.parse_errors += 1
                    log.warning(
                        "%s: unparseable frame from %s: %s", adapter.name, conn.url, exc.reason
                    )
                    if self.dead_letter is not None:
                        await self.dead_letter(
                            raw if isinstance(raw, bytes) else raw.encode(), exc.reason, conn.url
                        )
                    parsed = exc.trades
                if parsed.__class__ is list:
                    if not parsed:
                        continue
                    if conn.standby:
                        conn.held.extend(parsed)  # type: ignore[arg-type]
                        continue
                    stats.last_message = t
                    out = admit(parsed)  # type: ignore[arg-type]
                    if out:
                        stats.trades += len(out)
                        await emit(out)
                else:
                    if not conn.standby:
                        stats.last_message = t
                    self._on_event(conn, parsed)  # type: ignore[arg-type]
        except ConnectionClosedOK as exc:
            conn.reason = (
                conn.reason
                or f"closed by server ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            )
        except ConnectionClosed as exc:
            conn.reason = conn.reason or f"connection lost ({exc})"
        except asyncio.CancelledError:
            conn.reason = conn.reason or "cancelled"
            raise
        except BufferClosed:
            conn.reason = conn.reason or "stopping"
        except Exception as exc:  # a bug must not end the ingestor silently
            log.exception("%s: reader failed on %s", adapter.name, conn.url)
            conn.reason = f"reader failed: {exc!r}"
        return conn.reason

    def _on_event(self, conn: _Conn, ev: Event) -> None:
        events = self.stats.events
        events[ev.kind] = events.get(ev.kind, 0) + 1
        kind = ev.kind
        if kind == "subscribed":
            if not conn.standby:
                self.stats.subscribed = True
        elif kind == "shutdown":
            self.stats.server_shutdowns += 1
            log.warning(
                "%s: server announced shutdown on %s; rotating to a new connection",
                self.adapter.name,
                conn.url,
            )
            if not conn.standby:
                self._rotate_now.set()
        elif kind == "status":
            system = ev.detail.get("system")
            if system not in (None, "online"):
                log.warning("%s: exchange status %r on %s", self.adapter.name, system, conn.url)
                if not conn.standby:
                    self.stats.subscribed = False
        elif kind == "error":
            log.error("%s: exchange error on %s: %s", self.adapter.name, conn.url, ev.detail)

    # ---- timers: staleness, app pings, rotation --------------------------------------
    async def _supervise(self) -> None:
        tick = max(0.05, min(1.0, self.stale_after / 5 if self.stale_after else 1.0))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rotate_now.wait(), tick)
            if self._stop.is_set():
                return
            p = self._primary
            if p is None or p.task is None or p.task.done() or p.retired:
                self._rotate_now.clear()
                continue
            now = time.monotonic()
            if self.stale_after and now - p.last_message > self.stale_after and not self._rotating:
                self.stats.stale_reconnects += 1
                p.reason = "stale"
                log.warning(
                    "%s: no message for %.1fs on %s; reconnecting",
                    self.adapter.name,
                    now - p.last_message,
                    p.url,
                )
                p.ws.transport.abort()
                continue
            if self.app_ping_interval:
                for c in (p, self._standby):
                    if c is not None and now - c.last_app_ping >= self.app_ping_interval:
                        msg = self.adapter.app_ping(c.url)
                        c.last_app_ping = now
                        if msg is not None:
                            self.stats.app_pings += 1
                            with contextlib.suppress(ConnectionClosed):
                                await c.ws.send(msg)
            due = self.rotate_after is not None and now - p.opened >= self.rotate_after
            if (due or self._rotate_now.is_set()) and not self._rotating:
                self._rotate_now.clear()
                self._rotating = True
                task = asyncio.get_running_loop().create_task(self._rotate(p))
                task.add_done_callback(lambda _t: setattr(self, "_rotating", False))

    async def _rotate(self, old: _Conn) -> None:
        """Open a standby, hold its trades until they overlap the old one's, then cut over."""
        try:
            await self._rotate_inner(old)
        except Exception:  # logged; the old connection keeps streaming
            log.exception("%s: rotation failed", self.adapter.name)

    async def _rotate_inner(self, old: _Conn) -> None:
        standby = await self._open(self.current_url, standby=True)
        if standby is None:
            # the old connection keeps going; try again after a backoff step
            await self._sleep(self.backoff.next())
            if not old.retired:
                self._rotate_now.set()
            return
        self._standby = standby
        standby.task = asyncio.get_running_loop().create_task(self._reader(standby))
        deadline = time.monotonic() + self.policy.overlap_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if standby.task.done():  # the standby died: keep the old one, retry later
                self._standby = None
                self._rotate_now.set()
                return
            if old.task is None or old.task.done():
                break
            if standby.held and self.sequencer.overlaps(standby.held):
                break
            if len(standby.held) >= self.policy.max_held:
                break
            await asyncio.sleep(0.01)
        # cut over: the standby becomes primary before the old one is closed
        old.retired = True
        old.reason = "rotated"
        self._primary = standby
        self._standby = None
        self.stats.url = self.current_url
        self.stats.connected = True
        await self._close(old)
        if old.task is not None and not old.task.done():
            old.task.cancel()
        while standby.held:
            batch, standby.held = standby.held, []
            out = self.sequencer.admit(batch)
            if out:
                self.stats.trades += len(out)
                await self.emit(out)
        standby.standby = False
        standby.last_message = time.monotonic()
        self.stats.last_message = standby.last_message
        self.stats.subscribed = True
        self.stats.rotations += 1
        log.info("%s: rotated to a new connection on %s", self.adapter.name, standby.url)
