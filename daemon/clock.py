"""The only place rollbackd reads the time or sleeps: the two implementations of `daemon.ports.Clock`.

The live daemon uses `SystemClock`; replay, backtests and the sandbox drive a `VirtualClock`.
Everything else receives a clock (or an explicit time inside an event) and never calls
`datetime.now()` or `time.sleep()` itself, so the same code runs deterministically in replay.
`daemon.bootstrap` chooses one per mode. Formatting and parsing times is `daemon.core.timefmt`.
"""
from __future__ import annotations

import threading
import time as _time
from datetime import datetime, timedelta, timezone


class SystemClock:
    """Wall-clock time, timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep_until(self, when: datetime, stop: threading.Event | None = None) -> None:
        delay = (when - self.now()).total_seconds()
        if delay <= 0:
            return
        if stop is not None:
            stop.wait(delay)
        else:
            _time.sleep(delay)


class VirtualClock:
    """Virtual time. With `speed` it runs `speed` virtual seconds per wall second (the sandbox);
    without it time only moves when `advance_to` is called (replay and tests)."""

    def __init__(self, start: datetime, speed: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._lock = threading.Lock()
        self._virtual_at_anchor = start
        self._wall_anchor = _time.monotonic()
        self.speed = speed

    def now(self) -> datetime:
        with self._lock:
            if self.speed is None:
                return self._virtual_at_anchor
            elapsed = (_time.monotonic() - self._wall_anchor) * self.speed
            return self._virtual_at_anchor + timedelta(seconds=elapsed)

    def monotonic(self) -> float:
        return self.now().timestamp()

    def set_speed(self, speed: float | None) -> None:
        """Start (or stop) running at `speed` from the current virtual time. The sandbox builds its
        world with a stopped clock and starts it here, so set-up time does not eat virtual minutes."""
        with self._lock:
            if self.speed is not None:
                self._virtual_at_anchor += timedelta(seconds=(_time.monotonic() - self._wall_anchor) * self.speed)
            self._wall_anchor = _time.monotonic()
            self.speed = speed

    def advance_to(self, when: datetime) -> None:
        """Move virtual time forward (never backward)."""
        with self._lock:
            current = self._virtual_at_anchor
            if self.speed is not None:
                current += timedelta(seconds=(_time.monotonic() - self._wall_anchor) * self.speed)
            self._virtual_at_anchor = max(current, when)
            self._wall_anchor = _time.monotonic()

    def sleep_until(self, when: datetime, stop: threading.Event | None = None) -> None:
        if self.speed is None:
            self.advance_to(when)
            return
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            wall = min(remaining / self.speed, 0.5)
            if stop is not None:
                if stop.wait(wall):
                    return
            else:
                _time.sleep(wall)
