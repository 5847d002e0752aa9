"""The daemon loop shared by the live service and the sandbox.

Every `tick_interval` (aligned to the minute on the daemon's clock) it reloads the policy if the file
changed, collects Cloud Monitoring metrics for active rollouts (live mode), lets the world move (the
sandbox's traffic simulator), and ticks the engine. Events from Pub/Sub arrive on their own threads
through `Dispatcher.handle`. Nothing here decides anything: decisions are the core's.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

log = logging.getLogger("rollbackd.runner")


class Daemon:
    def __init__(self, *, engine: Any, clock: Any, tick_interval_s: int = 60,
                 sources: Iterable[Any] = (), before_tick: Iterable[Callable[[datetime], None]] = (),
                 after_tick: Iterable[Callable[[datetime], None]] = (),
                 policy_reloader: Any = None, stop_after: datetime | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.tick_interval = timedelta(seconds=tick_interval_s)
        self.sources = list(sources)
        self.before_tick = list(before_tick)
        self.after_tick = list(after_tick)
        self.policy_reloader = policy_reloader
        self.stop_event = threading.Event()
        self.stop_after = stop_after
        self.last_tick_at: datetime | None = None
        self.tick_errors = 0

    def ready(self) -> tuple[bool, str]:
        """Ready = subscribed, a policy loaded, and evaluated recently."""
        for source in self.sources:
            if not getattr(source, "ready", True):
                return False, f"event source not connected: {getattr(source, 'last_error', '') or 'connecting'}"
        if self.policy_reloader is not None and not self.policy_reloader.loaded:
            return False, "no policy loaded"
        if self.last_tick_at is None:
            return False, "not evaluated yet"
        if self.clock.now() - self.last_tick_at > self.tick_interval * 3:
            return False, f"last evaluation at {self.last_tick_at.isoformat()} is too old"
        return True, "ready"

    def next_tick_after(self, now: datetime) -> datetime:
        seconds = int(self.tick_interval.total_seconds())
        epoch = int(now.timestamp())
        return datetime.fromtimestamp((epoch // seconds + 1) * seconds, tz=now.tzinfo)

    def run_once(self, at: datetime) -> None:
        """One tick: reload, collect, let the world move, evaluate."""
        if self.policy_reloader is not None:
            self.policy_reloader.check()
        for hook in self.before_tick:
            try:
                hook(at)
            except Exception:  # noqa: BLE001 - a failing collector must not stop evaluation
                self.tick_errors += 1
                log.exception("before-tick hook failed")
        self.engine.tick(at)
        self.last_tick_at = at
        for hook in self.after_tick:
            try:
                hook(at)
            except Exception:  # noqa: BLE001
                self.tick_errors += 1
                log.exception("after-tick hook failed")

    def run(self) -> None:
        for source in self.sources:
            source.start()
        try:
            while not self.stop_event.is_set():
                # Every boundary gets its tick, even after a stall: a skipped tick would be a minute
                # the sandbox world never simulates and the collector never asks for.
                at = (self.last_tick_at + self.tick_interval if self.last_tick_at is not None
                      else self.next_tick_after(self.clock.now()))
                if self.stop_after is not None and at > self.stop_after:
                    break
                self.clock.sleep_until(at, self.stop_event)
                if self.stop_event.is_set():
                    break
                self.run_once(at)
        finally:
            for source in self.sources:
                try:
                    source.stop()
                except Exception:  # noqa: BLE001 - shutting down
                    log.exception("stopping a source failed")

    def stop(self) -> None:
        self.stop_event.set()


class PolicyReloader:
    """Hot reload on SIGHUP and when the file changes. An invalid file keeps the last good policy,
    logs an error and increments a counter."""

    def __init__(self, path: str | None, *, telemetry: Any, on_error: Callable[[str], None]) -> None:
        from policies import load_default_policy
        from policies.loader import load_policy

        self._load = (lambda: load_policy(path)) if path else load_default_policy
        self.path = path
        self.telemetry = telemetry
        self.on_error = on_error
        self.policy = self._load()
        self.loaded = True
        self._mtime = self._stat()
        self._requested = False

    def _stat(self) -> float | None:
        import os

        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    def request(self) -> None:
        """From the SIGHUP handler: reload at the next tick."""
        self._requested = True

    def check(self) -> None:
        mtime = self._stat()
        if not self._requested and mtime == self._mtime:
            return
        self._requested = False
        self._mtime = mtime
        from policies.loader import PolicyError

        try:
            self.policy = self._load()
            self.telemetry.policy_reload(True)
            log.info("policy reloaded from %s", self.path)
        except PolicyError as error:
            self.telemetry.policy_reload(False)
            issues = getattr(error, "issues", [])
            text = "; ".join(f"{i.file}:{i.line}:{i.col}: {i.path}: {i.message}" for i in issues[:5]) or str(error)
            self.on_error(f"policy reload failed, keeping the last good policy: {text}")

    def __call__(self) -> Any:
        return self.policy
