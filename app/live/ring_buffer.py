"""The bounded hand-over between the generation worker and the render loop.

The worker `put`s MPI frames in order and blocks while the buffer is full (so memory stays bounded
and no frame is ever dropped); the render loop takes them with `get_nowait` at the driving video's
frame rate, paced by `FramePacer`, and shows "generating..." instead of stuttering when it runs dry.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class RingBuffer(Generic[T]):
    """Thread-safe FIFO of at most `capacity` items; one producer and one consumer."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.produced = 0
        self.consumed = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Append, waiting while full. False if the buffer was closed (or the wait timed out)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._closed or len(self._items) < self.capacity, timeout)
            if self._closed or not ok:
                return False
            self._items.append(item)
            self.produced += 1
            self._cond.notify_all()
            return True

    def get_nowait(self) -> T | None:
        """The oldest item, or None when empty (the render loop must never block)."""
        with self._cond:
            return self._pop_locked()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to `timeout`; None if closed and empty, or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or bool(self._items), timeout)
            return self._pop_locked()

    def _pop_locked(self) -> T | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self.consumed += 1
        self._cond.notify_all()  # a producer waiting for room may go on
        return item

    def close(self) -> None:
        """Wake everyone; later puts fail, gets drain what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def fill(self) -> float:
        """Fraction of the capacity in use, for the buffer gauge."""
        return len(self) / self.capacity


class FramePacer:
    """Decides when the render loop moves to the next generated frame.

    Frames are due every 1/fps seconds; when one is due but the buffer is empty the pacer stalls
    (keeps showing the current frame, reports `waiting`) and restarts its clock when frames come
    back, rather than racing through a backlog to catch up."""

    def __init__(self, fps: float):
        if fps <= 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self.period = 1.0 / fps
        self._next_due: float | None = None
        self.waiting = False

    def due(self, now: float) -> bool:
        return self._next_due is None or now >= self._next_due

    def advanced(self, now: float) -> None:
        """Call after showing a new frame at time `now`."""
        if self._next_due is None or self.waiting or now - self._next_due > self.period:
            self._next_due = now + self.period  # (re)start the clock: no catch-up burst
        else:
            self._next_due += self.period
        self.waiting = False

    def starved(self) -> None:
        """Call when a frame was due and none was available."""
        self.waiting = True
