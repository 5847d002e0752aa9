"""Issue 11 item 4 at start-up: one service's corrupt annotations must not stop `restore()` (and so
`run_live`) for every service. The corrupt one is logged with its reason and left alone; the others
are restored. Small hand-written fakes of the traffic controller and the engine: `restore` only
lists services and fills `engine.states`."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

from actions.base import ServiceView, TrafficEntry
from daemon.clock import VirtualClock
from daemon.live import restore, resync
from policies import default_policy_path
from policies.loader import load_policy
from tests.unit.test_sane_annotations import annotations

POLICY = load_policy(default_policy_path())
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


class Traffic:
    def __init__(self, views: list[ServiceView]) -> None:
        self.views = views

    def list_services(self) -> list[ServiceView]:
        return self.views


class Engine:
    def __init__(self) -> None:
        self.clock = VirtualClock(NOW)
        self.states: dict[str, Any] = {}
        self.labels: dict[str, Any] = {}
        self.submitted: list[Any] = []
        self._lock = threading.Lock()

    def policy_for(self, name: str) -> Any:
        return POLICY

    def submit(self, event: Any) -> None:
        self.submitted.append(event)


class DecisionLog:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def error(self, message: str, service: str = "") -> None:
        self.errors.append((service, message))


def view(name: str, values: dict[str, str]) -> ServiceView:
    traffic = (TrafficEntry("checkout-00041-mib", 75), TrafficEntry("checkout-00042-vux", 25))
    return ServiceView(name=name, project="shop-prod", location="europe-west1", labels={}, annotations=values,
                       traffic=traffic, latest_created_revision="checkout-00042-vux",
                       latest_ready_revision="checkout-00042-vux")


CORRUPT = {
    "year-one": annotations(rollout_started="0001-01-01T00:30:00+01:00"),
    "nineteen-hundred": annotations(rollout_started="1900-01-01T00:00:00Z", phase_started="1900-01-01T00:00:00Z"),
    "far-future": annotations(rollout_started="2099-01-01T00:00:00Z", phase_started="2099-01-01T00:00:00Z"),
    "last-phase": annotations(phase="4", canary_percent="100"),
}


def test_corrupt_annotations_on_one_service_do_not_stop_restore_for_the_others() -> None:
    views = [view(name, values) for name, values in CORRUPT.items()] + [view("checkout", annotations())]
    engine, log = Engine(), DecisionLog()
    assert restore(engine, Traffic(views), log) == 1
    assert set(engine.states) == {"checkout"}
    assert {service for service, _ in log.errors} == set(CORRUPT)
    assert all("rollbackd annotations" in message for _, message in log.errors), log.errors


def test_resync_skips_corrupt_annotations() -> None:
    views = [view(name, values) for name, values in CORRUPT.items()] + [view("checkout", annotations())]
    engine = Engine()
    resync(engine, Traffic(views), DecisionLog())
    assert set(engine.states) == {"checkout"}
