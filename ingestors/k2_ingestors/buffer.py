"""The bounded hand-off between the WebSocket reader and the sink.

Items are batches (the trades of one frame); the bound counts trades. `put` waits
while the buffer is full: the reader then stops reading, websockets stops reading the
socket once its own small queue is full, and TCP pushes back on the exchange. Memory
stays bounded whatever Kafka does. Time spent waiting is counted (backpressure).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BufferClosed(Exception):
    pass


class BoundedBuffer(Generic[T]):
    def __init__(self, max_items: int = 100_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = max_items
        self._batches: deque[list[T]] = deque()
        self.size = 0
        self.high_water = 0
        self.blocked_seconds = 0.0
        self.blocked_count = 0
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._not_empty = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, batch: list[T]) -> None:
        """Append a batch; wait while the buffer is full (a batch larger than the bound waits for empty)."""
        if self._closed:
            raise BufferClosed("buffer is closed")
        if self.size and self.size + len(batch) > self.max_items:
            self.blocked_count += 1
            started = time.monotonic()
            while self.size and self.size + len(batch) > self.max_items:
                self._not_full.clear()
                await self._not_full.wait()
                if self._closed:
                    raise BufferClosed("buffer closed while waiting")
            self.blocked_seconds += time.monotonic() - started
        self._batches.append(batch)
        self.size += len(batch)
        if self.size > self.high_water:
            self.high_water = self.size
        self._not_empty.set()

    async def get(self, max_items: int = 10_000) -> list[list[T]]:
        """Batches totalling up to about `max_items` (at least one); [] once closed and drained."""
        while not self._batches:
            if self._closed:
                return []
            self._not_empty.clear()
            await self._not_empty.wait()
        out: list[list[T]] = []
        n = 0
        batches = self._batches
        while batches and n < max_items:
            b = batches.popleft()
            out.append(b)
            n += len(b)
        self.size -= n
        if self.size + 1 <= self.max_items:
            self._not_full.set()
        return out

    def close(self) -> None:
        """No more puts; `get` drains what is left, then returns []."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()
