"""Issue 11 item 4 at start-up: one service's corrupt annotations must not stop `restore()` (and so
`run_live`) for every service. The corrupt one is held (quarantined, a human told) with its reason
and left alone; the others are restored. The real Engine, and a listing of services as Cloud Run
would return them."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from daemon.ports import ApplyResult, ServiceView, TrafficEntry
from daemon.bootstrap import build
from daemon.engine import Engine
from daemon.clock import VirtualClock
from daemon.live import restore, resync
from policies import default_policy_path
from policies.loader import load_policy
from tests.unit.test_sane_annotations import annotations

POLICY = load_policy(default_policy_path())
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


class Traffic:
    """Cloud Run as restore sees it: the listed services; writes are accepted and change nothing."""

    def __init__(self, views: list[ServiceView]) -> None:
        self.views = views

    def list_services(self) -> list[ServiceView]:
        return self.views

    def apply(self, command: Any) -> ApplyResult:
        return ApplyResult(changed=False)

    def save_state(self, command: Any) -> ApplyResult:
        return ApplyResult(changed=False)


def engine() -> Engine:
    return build("replay", policy=lambda: POLICY, traffic=None, clock=VirtualClock(NOW))


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
    eng = engine()
    eng.traffic = Traffic(views)
    assert restore(eng, eng.traffic, DecisionLog()) == 1
    assert {key.name for key in eng.states} == {"checkout"}
    assert {key.name for key in eng.quarantined} == set(CORRUPT), "each corrupt service is held, and only those"
    assert all("rollbackd annotations" in reason for reason in eng.quarantined.values()), eng.quarantined


def test_resync_skips_corrupt_annotations() -> None:
    views = [view(name, values) for name, values in CORRUPT.items()] + [view("checkout", annotations())]
    eng = engine()
    eng.traffic = Traffic(views)
    resync(eng, eng.traffic, DecisionLog())
    assert {key.name for key in eng.states} == {"checkout"}
    assert {key.name for key in eng.quarantined} == set(CORRUPT)
