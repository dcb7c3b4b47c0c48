"""Recorded exchange traffic: cryptofeed's raw-data line format, or JSON lines of frames.

cryptofeed format (see shared/data/recorded/README.md):
    <url> <-> <ts>            a connection opened
    <url> <- <ts>: <json>     a frame the client sent
    <ts>: <json>              a frame received
JSON lines: one frame per line, either the frame itself or an object {"raw": "<frame text>", ...}.

Only trade-bearing frames are served by the replay server; each carries the key a
subscription must match: the Binance stream name (lower case), the Kraken v1 pair or
v2 symbol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_RECV = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")
_SENT = re.compile(r"^(\S+) <- (\d+(?:\.\d+)?): (.*)$")
_OPEN = re.compile(r"^(\S+) <-> (\d+(?:\.\d+)?)\s*$")


@dataclass(slots=True)
class CapturedFrame:
    raw: str
    key: str  # what a subscription must name to receive this frame
    trades: int  # trades in the frame
    recv_ts: float | None = None


@dataclass
class Capture:
    exchange: str
    frames: list[CapturedFrame] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    channel_ids: dict[str, int] = field(default_factory=dict)  # Kraken v1 pair -> channelID
    skipped_lines: int = 0  # lines the recorder truncated (not JSON)

    @property
    def trade_count(self) -> int:
        return sum(f.trades for f in self.frames)

    def keys(self) -> list[str]:
        return sorted({f.key for f in self.frames})


def classify(exchange: str, msg: Any) -> tuple[str, int] | None:
    """(subscription key, trade count) for a trade-bearing frame, else None."""
    ex = exchange.lower()
    if ex == "binance" and isinstance(msg, dict):
        data = msg.get("data", msg)
        if isinstance(data, dict) and data.get("e") in ("trade", "aggTrade"):
            stream = msg.get("stream") or f"{str(data.get('s', '')).lower()}@{data['e']}"
            return str(stream).lower(), 1
    if ex == "kraken":
        if (
            isinstance(msg, list)
            and len(msg) >= 4
            and msg[-2] == "trade"
            and isinstance(msg[1], list)
        ):
            return str(msg[-1]), len(msg[1])
        if (
            isinstance(msg, dict)
            and msg.get("channel") == "trade"
            and isinstance(msg.get("data"), list)
            and msg["data"]
        ):
            first = msg["data"][0]
            return str(first.get("symbol")) if isinstance(first, dict) else "", len(msg["data"])
    return None


def _add(cap: Capture, raw: str, recv_ts: float | None) -> None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        cap.skipped_lines += 1
        return
    if isinstance(msg, dict) and msg.get("event") == "subscriptionStatus" and "channelID" in msg:
        cap.channel_ids[str(msg.get("pair"))] = int(msg["channelID"])
    c = classify(cap.exchange, msg)
    if c is not None:
        cap.frames.append(CapturedFrame(raw, c[0], c[1], recv_ts))


def load_capture(path: str | Path, exchange: str) -> Capture:
    """Read a capture file (format detected per line)."""
    cap = Capture(exchange.lower())
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line[0] in "{[":
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                cap.skipped_lines += 1
                continue
            if isinstance(obj, dict) and isinstance(obj.get("raw"), str):
                _add(cap, obj["raw"], obj.get("recv_ts"))
            else:
                _add(cap, line, None)
            continue
        # cryptofeed: the recorder sometimes cut a frame short and started a new session
        # on the same line ("...@depth@10wss://stream..."): keep the session header.
        cut = line.find("wss://", 1)
        if cut > 0 and _RECV.match(line):
            cap.skipped_lines += 1
            line = line[cut:]
        m = _OPEN.match(line)
        if m:
            cap.urls.append(m.group(1))
            continue
        m = _SENT.match(line)
        if m:
            cap.sent.append(m.group(3))
            continue
        m = _RECV.match(line)
        if m:
            _add(cap, m.group(2), float(m.group(1)))
            continue
        cap.skipped_lines += 1
    return cap
